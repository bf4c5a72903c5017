// wsserver admin console: a little progressive enhancement. Every page works without it.
"use strict";

// Ask before destructive actions (buttons with data-confirm).
document.addEventListener("submit", (event) => {
  const button = event.submitter || event.target.querySelector("button[data-confirm]");
  const question = button && button.dataset ? button.dataset.confirm : "";
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// The Ports screen: refresh the live connection counts every 5 s (read-only GET).
(function refreshConnections() {
  const table = document.getElementById("ports");
  if (!table) return;
  async function update() {
    try {
      const response = await fetch("/api/ports", { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const data = await response.json();
      for (const port of data.ports) {
        const row = table.querySelector(`tr[data-alias="${CSS.escape(port.alias)}"] td.connections`);
        if (row) row.textContent = String(port.connections);
      }
    } catch (error) {
      // the server may be reloading: try again next time
    }
  }
  setInterval(update, 5000);
})();
