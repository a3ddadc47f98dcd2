/**
 * The largest MCP message pyro accepts, on stdio and HTTP alike. Above the guest protocol's own
 * limits, so an oversized tool argument reaches the tool and is refused there with a clear error.
 */
export const MCP_MAX_REQUEST_BYTES = 16 * 1024 * 1024;
