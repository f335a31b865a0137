"""HTTP plumbing shared by the JSON API and the web pages: browser sessions and CSRF."""
