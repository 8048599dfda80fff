// Wall-screen mode (`?wall=1`): large type and a dark theme (dashboard.css, `body.wall`), no
// controls that need a pointer, the screen kept awake, and with `?rotate=N` a turn through
// the overview and every department, N seconds each. Nobody is there to sign in: auth.js keeps
// the wall's credential across browser restarts, renews a session's token by itself, and the
// connection reconnects and recovers on its own.
import { byId } from "./dom.js";
import { go } from "./router.js";

export class Wall {
  #timer = null;
  #lock = null;
  #next = byId("wall-next");

  constructor() {
    document.body.classList.add("wall");
    this.#keepAwake();
    // The lock is released when the page is hidden; take it again when it is shown.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.#keepAwake();
    });
  }

  /** Rotate every `seconds` through `scopes` (null: the overview), from `current`. */
  rotate(seconds, scopes, current, name) {
    clearInterval(this.#timer);
    if (!seconds || scopes.length < 2) {
      this.#next.hidden = true;
      return;
    }
    let index = Math.max(0, scopes.indexOf(current));
    let left = seconds;
    const show = () => {
      const upcoming = scopes[(index + 1) % scopes.length];
      this.#next.hidden = false;
      this.#next.textContent = `Next: ${name(upcoming)} in ${left} s`;
    };
    show();
    this.#timer = setInterval(() => {
      left -= 1;
      if (left <= 0) {
        index = (index + 1) % scopes.length;
        left = seconds;
        // In place: a rotating wall does not fill the history.
        go({ department: scopes[index] }, { replace: true });
      }
      show();
    }, 1000);
  }

  async #keepAwake() {
    try {
      this.#lock = await navigator.wakeLock?.request("screen");
    } catch {
      this.#lock = null; // not allowed here (no user gesture, or not a secure context)
    }
  }
}
