-- rppd 1.0.0 -> 1.1.0. Writers insert a narrow row (what they know: table, kind, row
-- images as json) and what the master records about an event moves to
-- rppd_event_state; bench/README.md, finding 21. Pending events and their state are
-- kept. Applied by ALTER EXTENSION rppd UPDATE or by `rppd init`; the result is the
-- same schema as rppd--1.1.0.sql (tests/db/upgrade.test.ts).
\echo Use "ALTER EXTENSION rppd UPDATE" or "rppd init" to load this file. \quit

-- Writers wait here for the commit and then write into the new table (by name).
LOCK TABLE @extschema@.rppd_event_queue IN ACCESS EXCLUSIVE MODE;

CREATE TABLE @extschema@.rppd_event_state (
  event_id bigint PRIMARY KEY,
  done_fns int[] NOT NULL DEFAULT '{}',
  attempts int NOT NULL DEFAULT 0,
  last_error text,
  fn_id int,
  cron_id int
);
COMMENT ON TABLE @extschema@.rppd_event_state IS 'what the master recorded about a queued event: finished functions, retries, the schedule that made it';
COMMENT ON COLUMN @extschema@.rppd_event_state.event_id IS 'rppd_event_queue.id';
COMMENT ON COLUMN @extschema@.rppd_event_state.done_fns IS 'functions that already finished for this event (several functions per event)';
COMMENT ON COLUMN @extschema@.rppd_event_state.attempts IS 'runs that failed on a transient error and will be retried';
COMMENT ON COLUMN @extschema@.rppd_event_state.last_error IS 'the error of the last retried run';
COMMENT ON COLUMN @extschema@.rppd_event_state.fn_id IS 'set for events made by a schedule: only this function runs (NULL = every function of schema_table)';
COMMENT ON COLUMN @extschema@.rppd_event_state.cron_id IS 'the rppd_cron row that made this event';
INSERT INTO @extschema@.rppd_event_state (event_id, done_fns, attempts, last_error, fn_id, cron_id)
SELECT id, done_fns, attempts, last_error, fn_id, cron_id FROM @extschema@.rppd_event_queue
 WHERE done_fns <> '{}' OR attempts > 0 OR last_error IS NOT NULL OR fn_id IS NOT NULL OR cron_id IS NOT NULL;

-- A new table rather than DROP COLUMN: a dropped column stays in the table's row
-- type, and every writer's INSERT would still fill it.
ALTER TABLE @extschema@.rppd_event_queue RENAME TO rppd_event_queue_1_0;
ALTER INDEX @extschema@.rppd_event_queue_pkey RENAME TO rppd_event_queue_1_0_pkey;
ALTER SEQUENCE @extschema@.rppd_event_queue_id_seq OWNED BY NONE;
CREATE TABLE @extschema@.rppd_event_queue (
  id bigint NOT NULL DEFAULT nextval('@extschema@.rppd_event_queue_id_seq'::regclass) PRIMARY KEY,
  schema_table text NOT NULL,
  trig smallint NOT NULL,
  new_row json,
  old_row json,
  created_at timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0.02);
ALTER SEQUENCE @extschema@.rppd_event_queue_id_seq OWNED BY @extschema@.rppd_event_queue.id;
INSERT INTO @extschema@.rppd_event_queue (id, schema_table, trig, new_row, old_row, created_at)
SELECT id, schema_table, trig, new_row::json, old_row::json, created_at FROM @extschema@.rppd_event_queue_1_0;
DROP TABLE @extschema@.rppd_event_queue_1_0;
COMMENT ON TABLE @extschema@.rppd_event_queue IS 'captured events not yet finished by every matching function; rows are deleted when done';
COMMENT ON COLUMN @extschema@.rppd_event_queue.id IS 'capture order';
COMMENT ON COLUMN @extschema@.rppd_event_queue.trig IS '0 update, 1 insert, 2 delete, 3 truncate';
COMMENT ON COLUMN @extschema@.rppd_event_queue.new_row IS 'the row after the change (INSERT, UPDATE), as to_json writes it';
COMMENT ON COLUMN @extschema@.rppd_event_queue.old_row IS 'the row before the change (UPDATE, DELETE)';
GRANT INSERT ON @extschema@.rppd_event_queue TO PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@.rppd_event() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF current_setting('rppd.node', true) = 'local' THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' AND TG_LEVEL = 'ROW' THEN
    INSERT INTO @extschema@.rppd_event_queue (schema_table, trig, new_row)
      VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 1, to_json(NEW));
  ELSIF TG_LEVEL = 'STATEMENT' THEN
    IF TG_OP <> 'TRUNCATE' THEN
      RETURN NULL;
    END IF;
    INSERT INTO @extschema@.rppd_event_queue (schema_table, trig) VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 3);
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO @extschema@.rppd_event_queue (schema_table, trig, new_row, old_row)
      VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 0, to_json(NEW), to_json(OLD));
  ELSE
    INSERT INTO @extschema@.rppd_event_queue (schema_table, trig, old_row)
      VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 2, to_json(OLD));
  END IF;
  -- Shared with other writers, held to the end of this transaction: a master that wants
  -- to poll cannot take the lock before this commit (and its NOTIFY).
  IF pg_try_advisory_xact_lock_shared(1919971428, hashtext('@extschema@')) THEN
    PERFORM pg_notify('rppd_event', '@extschema@');
  END IF;
  RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.rppd_schema_version() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '1.1.0'::text $$;

-- pg_dump keeps the rows of an extension's tables (and the positions of its sequences)
-- only when they are marked, so that a backup does not lose functions, schedules or
-- pending events. Applied by `rppd init`, the tables are ordinary ones: nothing to mark.
-- One call per statement: each call updates the same pg_extension row.
DO $dump$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['rppd_config', 'rppd_function', 'rppd_function_log', 'rppd_cron', 'rppd_event_queue',
                           'rppd_event_state', 'rppd_config_id_seq', 'rppd_function_id_seq', 'rppd_function_log_id_seq',
                           'rppd_cron_id_seq', 'rppd_event_queue_id_seq', 'rppd_epoch_seq'] LOOP
    PERFORM pg_catalog.pg_extension_config_dump(('@extschema@.' || t)::regclass, '');
  END LOOP;
EXCEPTION WHEN feature_not_supported THEN
  NULL;
END
$dump$;
