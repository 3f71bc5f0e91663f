-- Where each stage attempt's compute ran: `<hostname>:<pid>` of that process (NULL for older rows).
-- With a distributed executor, this is how a user finds the items a bad worker touched.
ALTER TABLE stage_attempts ADD COLUMN worker VARCHAR;
