"""The worker process: arq settings and the job functions (thin; the work is in relay/)."""
