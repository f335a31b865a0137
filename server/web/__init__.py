"""The web app: server-rendered pages (Jinja2) with small vanilla JavaScript, every asset
served from the package, no CDN."""
