// Boots Swagger UI from a file, so /docs keeps the strict CSP (no inline script).
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // the default validator is a remote host
    defaultModelsExpandDepth: 0,
  });
});
