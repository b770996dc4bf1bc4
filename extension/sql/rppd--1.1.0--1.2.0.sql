-- rppd 1.1.0 -> 1.2.0. Writers NOTIFY only while a master listens for it. Before, they
-- notified unless a master held the poll lock, so with no node running (or none yet
-- master) every writer paid for a NOTIFY nobody read: with 8 clients that kept
-- 0.25-0.32 of the rate without the trigger, against 0.80-0.92 with no NOTIFY
-- (bench/README.md, finding 25). Now the master holds rppd_listen_lock while it waits
-- for NOTIFY, and a writer notifies only when that lock keeps it from sharing it.
-- Applied by ALTER EXTENSION rppd UPDATE or by `rppd init` (fresh installs run
-- rppd--1.1.0.sql and then this file).
\echo Use "ALTER EXTENSION rppd UPDATE" or "rppd init" to load this file. \quit

-- Key 'rppn' (1919971438) and hashtext of the schema. A master takes it (session level)
-- before it waits for NOTIFY and lets it go when it polls or stops; a lost connection or a
-- killed node releases it with the session, and writers stop notifying. Taking it waits up
-- to 20 ms for writers that decided to send no NOTIFY and have not committed yet: once it
-- is held their events are committed and a read finds them. While it waits, new writers
-- already notify (the waiting exclusive request fails their try).
CREATE FUNCTION @extschema@.rppd_listen_lock(hold bool) RETURNS bool LANGUAGE plpgsql
SET lock_timeout = '20ms' AS $fn$
BEGIN
  IF NOT hold THEN
    RETURN pg_advisory_unlock(1919971438, hashtext('@extschema@'));
  END IF;
  PERFORM pg_advisory_lock(1919971438, hashtext('@extschema@'));
  RETURN true;
EXCEPTION WHEN lock_not_available THEN
  RETURN false;
END
$fn$;
COMMENT ON FUNCTION @extschema@.rppd_listen_lock(bool) IS 'true: take the lock a master holds while it waits for NOTIFY (false after 20 ms if a writer that sends none is still in its transaction); false: release it. Writers NOTIFY only while it is held.';

-- 1.1.0 nodes still call it during a rolling upgrade; writers no longer look at it.
COMMENT ON FUNCTION @extschema@.rppd_poll_lock(bool) IS 'kept for rppd nodes older than 1.2.0; rppd_event() no longer reads this lock (see rppd_listen_lock)';

CREATE OR REPLACE FUNCTION @extschema@.rppd_writers_notify() RETURNS bool LANGUAGE sql STABLE AS $fn$
  SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks
     WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
       AND classid = 1919971438 AND objid = hashtext('@extschema@')::oid AND objsubid = 2
       AND mode = 'ExclusiveLock' AND granted)
$fn$;
COMMENT ON FUNCTION @extschema@.rppd_writers_notify() IS 'whether rppd_event() sends a NOTIFY now: true while a master waits for NOTIFY (holds rppd_listen_lock)';

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
  -- Shared with other writers and held to the end of this transaction when no master
  -- listens: a master cannot start waiting for NOTIFY before this commit, which it then reads.
  IF NOT pg_try_advisory_xact_lock_shared(1919971438, hashtext('@extschema@')) THEN
    PERFORM pg_notify('rppd_event', '@extschema@');
  END IF;
  RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.rppd_schema_version() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '1.2.0'::text $$;
