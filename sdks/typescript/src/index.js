// sundial: a client and a worker for the sundial job scheduler's HTTP API (Node >= 20, no
// dependencies). Types: index.d.ts beside this file.
export { Client, FINISHED_STATES, Trigger, jobSpec } from "./client.js";
export { SundialError, Unavailable, formatDuration, parseDuration } from "./http.js";
export { HandlerError, Worker } from "./worker.js";
