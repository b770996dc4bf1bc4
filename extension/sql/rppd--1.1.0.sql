-- rppd 1.1.0: the config tables, the durable event queue and the trigger function.
-- This file is the only place rppd's DDL is written. It is applied either by
-- CREATE EXTENSION rppd [SCHEMA s] or, on servers without extension files, by
-- `rppd init`, which substitutes @extschema@ itself. See docs/sql-objects.md.
-- Upgrades from 1.0.0: rppd--1.0.0--1.1.0.sql (the same objects, tested to match).
\echo Use "CREATE EXTENSION rppd" or "rppd init" to load this file. \quit

-- Nodes of the cluster (spec §1.1) plus what the lease and heartbeat need.
CREATE TABLE @extschema@.rppd_config (
  id serial PRIMARY KEY,
  host varchar(64) NOT NULL UNIQUE,
  host_name varchar(64) NOT NULL UNIQUE,
  active_since timestamptz DEFAULT now(),
  max_db_connections int NOT NULL DEFAULT 10 CHECK (max_db_connections > 0),
  master bool UNIQUE CHECK (master),
  heartbeat_at timestamptz,
  lease_until timestamptz,
  epoch bigint,
  started_at timestamptz,
  pid int,
  version text,
  stats jsonb
);
COMMENT ON TABLE @extschema@.rppd_config IS 'rppd nodes: one row per node (rppd start); master = true marks the node holding the lease. Changes reach running nodes within a second.';
COMMENT ON COLUMN @extschema@.rppd_config.host IS 'host:port the node binds for node-to-node RPC';
COMMENT ON COLUMN @extschema@.rppd_config.host_name IS 'node name (--name, default the hostname); unique';
COMMENT ON COLUMN @extschema@.rppd_config.active_since IS 'NULL or a future time = inactive: the node does not start work';
COMMENT ON COLUMN @extschema@.rppd_config.max_db_connections IS 'runtime workers (each with one DB connection) this node may run at once';
COMMENT ON COLUMN @extschema@.rppd_config.master IS 'true for the master, NULL otherwise; UNIQUE so at most one row is true';
COMMENT ON COLUMN @extschema@.rppd_config.heartbeat_at IS 'last heartbeat, database clock';
COMMENT ON COLUMN @extschema@.rppd_config.lease_until IS 'the master lease ends at this time unless renewed (database clock)';
COMMENT ON COLUMN @extschema@.rppd_config.epoch IS 'fencing number of the master term this node holds or last held';
COMMENT ON COLUMN @extschema@.rppd_config.stats IS 'queued, running, pool and other figures the node publishes with its heartbeat';

CREATE SEQUENCE @extschema@.rppd_epoch_seq;
COMMENT ON SEQUENCE @extschema@.rppd_epoch_seq IS 'master epochs: every takeover takes the next value';

-- Functions (spec §1.2) plus lang and timeout_sec.
CREATE TABLE @extschema@.rppd_function (
  id serial PRIMARY KEY,
  code text NOT NULL,
  checksum varchar(64) NOT NULL,
  schema_table varchar(64) NOT NULL,
  topic varchar(64) NOT NULL DEFAULT '',
  priority int NOT NULL DEFAULT 1,
  queue bool NOT NULL DEFAULT true,
  cleanup_logs_min int NOT NULL DEFAULT 0,
  fn_logging bool NOT NULL DEFAULT false,
  verbose_debug bool NOT NULL DEFAULT false,
  env json,
  sign json,
  lang varchar(16) NOT NULL DEFAULT 'python' CHECK (lang IN ('python', 'js', 'ts')),
  timeout_sec int NOT NULL DEFAULT 60 CHECK (timeout_sec > 0),
  CHECK (topic = '' OR topic NOT LIKE '.%' OR length(topic) > 1)
);
CREATE INDEX rppd_function_schema_table_idx ON @extschema@.rppd_function (schema_table);
COMMENT ON TABLE @extschema@.rppd_function IS 'Functions run per event of schema_table. If modified, every node reloads within a second.';
COMMENT ON COLUMN @extschema@.rppd_function.code IS 'source: Python (exec semantics) or an ES module whose default export is async (event, ctx) => ...';
COMMENT ON COLUMN @extschema@.rppd_function.checksum IS 'free text kept for compatibility; code is compiled once per (id, sha256 of code)';
COMMENT ON COLUMN @extschema@.rppd_function.schema_table IS 'schema.table whose rppd_event() trigger fires this function; a bare name means public.name';
COMMENT ON COLUMN @extschema@.rppd_function.topic IS '''''= one queue per table; ''.col'' = one queue per value of column col; other text = a named topic shared by tables';
COMMENT ON COLUMN @extschema@.rppd_function.priority IS 'functions of one event run in ascending priority, then id';
COMMENT ON COLUMN @extschema@.rppd_function.queue IS 'true: the runs of one queue never overlap and follow commit order; false: they run in parallel';
COMMENT ON COLUMN @extschema@.rppd_function.cleanup_logs_min IS 'delete this function''s log rows older than N minutes (0 = keep)';
COMMENT ON COLUMN @extschema@.rppd_function.fn_logging IS 'write a rppd_function_log row per run with captured output (failed runs are always logged)';
COMMENT ON COLUMN @extschema@.rppd_function.verbose_debug IS 'add the code and the input to error messages';
COMMENT ON COLUMN @extschema@.rppd_function.lang IS 'python (default), js or ts';
COMMENT ON COLUMN @extschema@.rppd_function.timeout_sec IS 'a run taking longer is stopped and recorded as failed';

-- A bare table name means public.<name>, as the trigger always reports schema.table.
CREATE FUNCTION @extschema@.rppd_function_normalise() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  NEW.schema_table := btrim(NEW.schema_table);
  IF position('.' IN NEW.schema_table) = 0 THEN
    NEW.schema_table := 'public.' || NEW.schema_table;
  END IF;
  RETURN NEW;
END
$fn$;
CREATE TRIGGER rppd_function_normalise BEFORE INSERT OR UPDATE OF schema_table ON @extschema@.rppd_function
  FOR EACH ROW EXECUTE FUNCTION @extschema@.rppd_function_normalise();

-- Run journal (spec §1.3) plus the event it belongs to.
CREATE TABLE @extschema@.rppd_function_log (
  id bigserial PRIMARY KEY,
  node_id int NOT NULL,
  fn_id int NOT NULL,
  trig_value json,
  trig_type int,
  started_at timestamptz DEFAULT now(),
  took_ms bigint,
  output text,
  error_msg text,
  event_id bigint
);
CREATE INDEX rppd_function_log_fn_started_idx ON @extschema@.rppd_function_log (fn_id, started_at);
COMMENT ON TABLE @extschema@.rppd_function_log IS 'one row per run of a function with fn_logging, and one per failed run of any function';

-- Schedules (spec §1.4, with the comment on the real column name).
CREATE TABLE @extschema@.rppd_cron (
  id serial PRIMARY KEY,
  fn_id int NOT NULL,
  cron varchar(64) NOT NULL,
  column_name varchar(64) NOT NULL,
  column_value text,
  cadence bool DEFAULT false,
  timeout_sec int,
  finished_at timestamptz,
  started_at timestamptz,
  error_msg text
);
COMMENT ON TABLE @extschema@.rppd_cron IS 'schedules: the function fn_id runs when the cron expression is due';
COMMENT ON COLUMN @extschema@.rppd_cron.timeout_sec IS 'do not fire again while the previous firing started less than timeout_sec ago and has not finished';

-- The durable event queue: one row per captured change, written in the writer's
-- transaction, deleted once every matching function has finished. Writers insert
-- only what they know, so the row is narrow: every column of the INSERT costs each
-- writer (bench/README.md, finding 21). What the master learns later lives in
-- rppd_event_state.
CREATE TABLE @extschema@.rppd_event_queue (
  id bigserial PRIMARY KEY,
  schema_table text NOT NULL,
  trig smallint NOT NULL,
  new_row json,
  old_row json,
  created_at timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0.02);
COMMENT ON TABLE @extschema@.rppd_event_queue IS 'captured events not yet finished by every matching function; rows are deleted when done';
COMMENT ON COLUMN @extschema@.rppd_event_queue.id IS 'capture order';
COMMENT ON COLUMN @extschema@.rppd_event_queue.trig IS '0 update, 1 insert, 2 delete, 3 truncate';
COMMENT ON COLUMN @extschema@.rppd_event_queue.new_row IS 'the row after the change (INSERT, UPDATE), as to_json writes it';
COMMENT ON COLUMN @extschema@.rppd_event_queue.old_row IS 'the row before the change (UPDATE, DELETE)';

-- Per-event state written by the master only, for the few events that have any:
-- schedule-made events, events with several functions part done, retried runs.
-- Deleted with its event.
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

-- One row: functions_version grows with every change of rppd_function: an event
-- read in the same snapshot as a newer version waits for the node to reload its
-- functions.
CREATE TABLE @extschema@.rppd_wake (
  id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  functions_version bigint NOT NULL DEFAULT 0
);
INSERT INTO @extschema@.rppd_wake DEFAULT VALUES;

-- Whether writers NOTIFY: the master holds this session advisory lock (key 'rppd' =
-- 1919971428, hashtext of the schema) while it polls the queue, and a writer NOTIFYs
-- only when it can share the lock, that is when no master polls. NOTIFY takes a
-- global lock at commit, so busy clusters add none to user transactions. A lock
-- test costs the writer ~0.4 us, where reading a flag row cost ~7 us (bench/README.md).
-- Connection lost or node killed: the lock goes with the session, writers NOTIFY.
-- Taking it waits up to 20 ms for writers that are notifying now; while it waits, new
-- writers already send none (a waiting exclusive request fails their try).
CREATE FUNCTION @extschema@.rppd_poll_lock(hold bool) RETURNS bool LANGUAGE plpgsql
SET lock_timeout = '20ms' AS $fn$
BEGIN
  IF NOT hold THEN
    RETURN pg_advisory_unlock(1919971428, hashtext('@extschema@'));
  END IF;
  PERFORM pg_advisory_lock(1919971428, hashtext('@extschema@'));
  RETURN true;
EXCEPTION WHEN lock_not_available THEN
  RETURN false;
END
$fn$;
COMMENT ON FUNCTION @extschema@.rppd_poll_lock(bool) IS 'true: take the lock a polling master holds (false after 20 ms if a writer stays in a transaction that notifies); false: release it. Writers NOTIFY while nobody holds it.';
CREATE FUNCTION @extschema@.rppd_writers_notify() RETURNS bool LANGUAGE sql STABLE AS $fn$
  SELECT NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks
     WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
       AND classid = 1919971428 AND objid = hashtext('@extschema@')::oid AND objsubid = 2
       AND mode = 'ExclusiveLock' AND granted)
$fn$;
COMMENT ON FUNCTION @extschema@.rppd_writers_notify() IS 'whether rppd_event() sends a NOTIFY now: true unless a master polls the queue';

-- The trigger users attach: row level for INSERT / UPDATE / DELETE, statement
-- level for TRUNCATE. It only writes a row (no network call, never blocks on a
-- node) and NOTIFYs only when no master polls. Every statement and expression here
-- costs each writer: one INSERT, the row as json (to_json is cheaper than to_jsonb),
-- the most common case tested first (bench/README.md, finding 21).
-- Whether the table has functions is the node's question, not the writer's: an
-- event no function wants is deleted when read (bench/README.md, W1).
CREATE FUNCTION @extschema@.rppd_event() RETURNS trigger LANGUAGE plpgsql AS $fn$
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
COMMENT ON FUNCTION @extschema@.rppd_event() IS 'attach AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW (and AFTER TRUNCATE FOR EACH STATEMENT); records the event in the same transaction. SET rppd.node = ''local'' skips it.';

-- Config changes wake every node, which re-reads the table it is told about.
CREATE FUNCTION @extschema@.rppd_config_changed() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM pg_notify('rppd_config', '@extschema@.' || TG_TABLE_NAME);
  RETURN NULL;
END
$fn$;
CREATE TRIGGER rppd_config_changed AFTER INSERT OR DELETE OR TRUNCATE
  OR UPDATE OF host, host_name, active_since, max_db_connections, master
  ON @extschema@.rppd_config FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.rppd_config_changed();
CREATE FUNCTION @extschema@.rppd_function_changed() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  UPDATE @extschema@.rppd_wake SET functions_version = functions_version + 1;
  PERFORM pg_notify('rppd_config', '@extschema@.' || TG_TABLE_NAME);
  RETURN NULL;
END
$fn$;
CREATE TRIGGER rppd_config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
  ON @extschema@.rppd_function FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.rppd_function_changed();
CREATE TRIGGER rppd_config_changed AFTER INSERT OR DELETE OR TRUNCATE
  OR UPDATE OF fn_id, cron, column_name, column_value, cadence, timeout_sec
  ON @extschema@.rppd_cron FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.rppd_config_changed();

-- As in the original, functions may also be attached to the config tables themselves.
CREATE TRIGGER rppd_event AFTER INSERT OR DELETE
  OR UPDATE OF host, host_name, active_since, max_db_connections, master
  ON @extschema@.rppd_config FOR EACH ROW EXECUTE FUNCTION @extschema@.rppd_event();
CREATE TRIGGER rppd_event AFTER INSERT OR UPDATE OR DELETE
  ON @extschema@.rppd_function FOR EACH ROW EXECUTE FUNCTION @extschema@.rppd_event();
CREATE TRIGGER rppd_event AFTER INSERT OR DELETE
  OR UPDATE OF id, fn_id, cron, column_name, column_value, cadence, timeout_sec
  ON @extschema@.rppd_cron FOR EACH ROW EXECUTE FUNCTION @extschema@.rppd_event();

-- rppd_info (spec §3, same eight overloads): JSON read from what nodes publish in
-- rppd_config. No network call from inside PostgreSQL. cfg names the config table
-- as the original did ('' = this schema's rppd_config); only this schema's is read.
CREATE FUNCTION @extschema@.rppd_info(cfg text, node_id int, fn_log_id bigint, fn_log_uuid text)
RETURNS text LANGUAGE plpgsql STABLE AS $fn$
DECLARE
  n record;
  result jsonb;
  fn_log jsonb := 'null'::jsonb;
BEGIN
  IF node_id IS NULL OR node_id < 0 THEN
    SELECT * INTO n FROM @extschema@.rppd_config c WHERE c.master AND c.lease_until > now();
    IF NOT FOUND THEN
      SELECT * INTO n FROM @extschema@.rppd_config c ORDER BY c.heartbeat_at DESC NULLS LAST LIMIT 1;
    END IF;
  ELSE
    SELECT * INTO n FROM @extschema@.rppd_config c WHERE c.id = node_id;
  END IF;
  IF n.id IS NULL THEN
    RETURN jsonb_build_object('error', CASE WHEN node_id >= 0 THEN 'no such node: ' || node_id ELSE 'no node registered' END)::text;
  END IF;
  IF fn_log_id IS NOT NULL THEN
    SELECT jsonb_build_object('Status', jsonb_build_object('status',
             CASE WHEN l.id IS NULL THEN NULL
                  WHEN l.took_ms IS NOT NULL THEN jsonb_build_object('Finished', jsonb_build_object('took_ms', l.took_ms, 'error', l.error_msg))
                  ELSE jsonb_build_object('InProcSec', floor(extract(epoch FROM now() - l.started_at))) END))
      INTO fn_log
      FROM (SELECT 1) one LEFT JOIN @extschema@.rppd_function_log l ON l.id = fn_log_id;
  ELSIF fn_log_uuid IS NOT NULL THEN
    SELECT jsonb_build_object('Uuid', jsonb_build_object('uuid', coalesce(jsonb_agg(q.id::text ORDER BY q.id), '[]'::jsonb)))
      INTO fn_log
      FROM (SELECT e.id FROM @extschema@.rppd_event_queue e ORDER BY e.id LIMIT 1000) q;
  END IF;
  result := jsonb_build_object(
    'node_id', n.id,
    'host', n.host,
    'host_name', n.host_name,
    'is_master', coalesce(n.master, false) AND coalesce(n.lease_until > now(), false),
    'epoch', n.epoch,
    'heartbeat_age_ms', CASE WHEN n.heartbeat_at IS NULL THEN NULL ELSE floor(extract(epoch FROM now() - n.heartbeat_at) * 1000) END,
    'alive', coalesce(n.heartbeat_at > now() - interval '10 seconds', false),
    'queued', coalesce((n.stats ->> 'queued')::bigint, 0),
    'in_proc', coalesce((n.stats ->> 'running')::bigint, 0),
    'pool', coalesce((n.stats ->> 'pool')::bigint, 0),
    'pending_events', (SELECT count(*) FROM @extschema@.rppd_event_queue),
    'fn_log', fn_log,
    'nodes', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                 'node_id', c.id, 'host', c.host, 'host_name', c.host_name,
                 'is_master', coalesce(c.master, false) AND coalesce(c.lease_until > now(), false),
                 'heartbeat_age_ms', CASE WHEN c.heartbeat_at IS NULL THEN NULL ELSE floor(extract(epoch FROM now() - c.heartbeat_at) * 1000) END,
                 'queued', coalesce((c.stats ->> 'queued')::bigint, 0),
                 'in_proc', coalesce((c.stats ->> 'running')::bigint, 0),
                 'pool', coalesce((c.stats ->> 'pool')::bigint, 0)) ORDER BY c.id), '[]'::jsonb)
              FROM @extschema@.rppd_config c WHERE c.active_since IS NOT NULL));
  RETURN result::text;
END
$fn$;
CREATE FUNCTION @extschema@.rppd_info() RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT @extschema@.rppd_info(''::text, -1, NULL::bigint, NULL::text) $$;
CREATE FUNCTION @extschema@.rppd_info(cfg text) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT @extschema@.rppd_info(cfg, -1, NULL::bigint, NULL::text) $$;
CREATE FUNCTION @extschema@.rppd_info(node_id int) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT @extschema@.rppd_info(''::text, node_id, NULL::bigint, NULL::text) $$;
CREATE FUNCTION @extschema@.rppd_info(cfg text, node_id int) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT @extschema@.rppd_info(cfg, node_id, NULL::bigint, NULL::text) $$;
CREATE FUNCTION @extschema@.rppd_info(node_id int, fn_log_id bigint) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT @extschema@.rppd_info(''::text, node_id, fn_log_id, NULL::text) $$;
CREATE FUNCTION @extschema@.rppd_info(cfg text, node_id int, fn_log_id bigint) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT @extschema@.rppd_info(cfg, node_id, fn_log_id, NULL::text) $$;
CREATE FUNCTION @extschema@.rppd_info(node_id int, fn_log_uuid text) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT @extschema@.rppd_info(''::text, node_id, NULL::bigint, fn_log_uuid) $$;
CREATE FUNCTION @extschema@.rppd_info(cfg text, node_id int, fn_log_uuid text) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT @extschema@.rppd_info(cfg, node_id, NULL::bigint, fn_log_uuid) $$;

-- The schema version this file creates; rppd refuses a newer one than it knows.
CREATE FUNCTION @extschema@.rppd_schema_version() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '1.1.0'::text $$;

-- Writers of triggered tables need no rights on rppd's tables beyond these.
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;
GRANT INSERT ON @extschema@.rppd_event_queue TO PUBLIC;
GRANT USAGE ON SEQUENCE @extschema@.rppd_event_queue_id_seq TO PUBLIC;

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
