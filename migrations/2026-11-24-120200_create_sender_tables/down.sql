DROP TABLE rate_limits;
DROP TABLE customer_windows;
DROP TABLE send_attempts;
DROP TABLE send_jobs;
