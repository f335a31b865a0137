"""The knowledge base and the expert as MCP tools and resources, for any MCP client.

`tools` holds what each tool does (through the same services as the JSON API) and its
input and output models; `server` turns them into an MCP server; `http` mounts that
server at /mcp of the running app, with the app's sign-in, limits and quotas. The
`rodeoai mcp` command serves it over stdio.
"""
