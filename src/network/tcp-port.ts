/** The TCP port numbers a destination, a readiness check or a published port may name. */
export const TCP_PORT_RANGE = { min: 1, max: 65_535 } as const;
