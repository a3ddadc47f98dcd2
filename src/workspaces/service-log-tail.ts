/**
 * How many lines of each stream `service logs` shows by default (the contract's 20). Its own
 * module so the CLI can name it in help without loading the services code at start-up.
 */
export const SERVICE_LOG_TAIL_LINES = 20;
