// Debian's Firefox ESR, headless, driven over WebDriver BiDi by puppeteer-core, for the Python
// page tests (tests/support/firefox.py, which says why not Playwright).
//
// One JSON request a line on stdin, one JSON answer a line on stdout:
//   {"id": 1, "op": "goto", "page": "p1", "url": "..."} -> {"id": 1, "ok": true, "value": ...}
// A failed request answers {"id": ..., "ok": false, "error": "..."}; the browser goes on.
import { createInterface } from "node:readline";
import puppeteer from "puppeteer-core";

const FIREFOX = process.env.LIVEDASH_FIREFOX ?? "/usr/bin/firefox-esr";
// The machine's network refuses most connections: no background service may try one.
const QUIET_PREFS = {
  "app.update.auto": false,
  "browser.region.network.url": "",
  "browser.safebrowsing.provider.google4.updateURL": "",
  "browser.topsites.contile.enabled": false,
  "extensions.blocklist.enabled": false,
  "network.captive-portal-service.enabled": false,
  "network.connectivity-service.enabled": false,
  "network.dns.disablePrefetch": true,
  "network.predictor.enabled": false,
  "network.prefetch-next": false,
  "toolkit.telemetry.enabled": false,
  "toolkit.telemetry.server": "",
  "intl.accept_languages": "en-US",
  "intl.locale.requested": "en-US",
};
// Every Content-Security-Policy violation the page meets, kept for the test to read.
const CSP_RECORDER = () => {
  window.__cspViolations = [];
  document.addEventListener("securitypolicyviolation", (event) => {
    window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
  });
};
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: FIREFOX,
  headless: true,
  extraPrefsFirefox: QUIET_PREFS,
});
const pages = new Map();

async function open({ width = 1280, height = 800, timezone = "Europe/Berlin" }) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`script error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  await page.setViewport({ width, height });
  await page.emulateTimezone(timezone);
  await page.evaluateOnNewDocument(CSP_RECORDER);
  const name = `p${pages.size + 1}`;
  pages.set(name, { context, page, problems });
  return name;
}

// What the elements matching `selector` show: the first one's text (`how` "text"), all their
// texts ("texts") or their number ("count"); given `expected`, whether that is what they show.
// It runs in the page, whole: the page's CSP forbids eval, so no check can be passed in as text.
const READ = (selector, how, expected) => {
  // An element's text as a person reads it: whitespace collapsed, as Playwright's.
  const texts = [...document.querySelectorAll(selector)].map((element) =>
    element.textContent.replace(/\s+/g, " ").trim(),
  );
  const shown = how === "count" ? texts.length : how === "text" ? texts[0] : texts;
  return expected === undefined ? shown : JSON.stringify(shown) === JSON.stringify(expected);
};

// Waits until `selector` shows `expected` (see READ); fails with what the page showed instead.
async function until(page, how, selector, expected, timeout = 5000) {
  try {
    await page.waitForFunction(READ, { timeout, polling: "mutation" }, selector, how, expected);
  } catch (error) {
    if (error.name !== "TimeoutError") throw error;
    const saw = JSON.stringify(await page.evaluate(READ, selector, how));
    const wanted = JSON.stringify(expected);
    throw new Error(`${selector}: expected ${wanted} within ${timeout} ms, saw ${saw}`);
  }
}

const OPS = {
  open,
  goto: ({ page, url }) => page.goto(url).then(() => null),
  fill: ({ page, selector, text }) => page.locator(selector).fill(text),
  click: ({ page, selector }) => page.locator(selector).click(),
  select: ({ page, selector, value }) => page.select(selector, value),
  text: ({ page, selector, expected, timeout }) => until(page, "text", selector, expected, timeout),
  texts: ({ page, selector, expected, timeout }) =>
    until(page, "texts", selector, expected, timeout),
  count: ({ page, selector, expected, timeout }) =>
    until(page, "count", selector, expected, timeout),
  evaluate: ({ page, expression }) => page.evaluate(expression),
  url: ({ page }) => page.url(),
  screenshot: ({ page, path, fullPage = true }) =>
    page.screenshot({ path, fullPage }).then(() => path),
  problems: async ({ page, problems }) => [
    ...problems,
    ...(await page.evaluate("window.__cspViolations ?? []")).map((v) => `CSP refused: ${v}`),
  ],
  version: () => browser.version(),
};

async function answer({ id, op, page: name, ...args }) {
  try {
    if (!(op in OPS)) throw new Error(`unknown op ${op}`);
    const screen = name === undefined ? {} : pages.get(name);
    if (!screen) throw new Error(`no page ${name}`);
    const value = await OPS[op]({ ...screen, ...args });
    return { id, ok: true, value: value ?? null };
  } catch (error) {
    return { id, ok: false, error: error.message };
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  process.stdout.write(`${JSON.stringify(await answer(JSON.parse(line)))}\n`);
}
// stdin closed: the test is done with the browser.
await browser.close();
