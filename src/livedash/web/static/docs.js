// Swagger UI over the service's own OpenAPI schema. A file rather than an inline script: the
// page's Content-Security-Policy allows scripts from this origin only.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // By default the page shows a badge from validator.swagger.io, which would be handed the
  // schema's address: nothing here calls outside the hospital (and the policy refuses it).
  validatorUrl: null,
});
