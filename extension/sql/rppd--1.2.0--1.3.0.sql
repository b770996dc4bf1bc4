-- rppd 1.2.0 -> 1.3.0. Capture from the WAL, next to the trigger: a table opts in, its
-- changes reach the master through a logical replication slot (pgoutput), and the master
-- writes them to rppd_event_queue after the writer's commit. Writers then pay nothing
-- for capture beyond the WAL they already write: no trigger, no extra INSERT (bench/README.md,
-- finding 29). The cost: wal_level = logical (a server restart), a role with REPLICATION
-- for the slot, WAL kept while no node streams, the function starts one commit later.
-- Applied by ALTER EXTENSION rppd UPDATE or by `rppd init` (fresh installs run
-- rppd--1.1.0.sql and the upgrades after it).
\echo Use "ALTER EXTENSION rppd UPDATE" or "rppd init" to load this file. \quit

-- Where the master's copy of the slot's stream stands: the end LSN of the last decoded
-- transaction written to rppd_event_queue, updated in the same transaction as its events.
-- A master that restarts from the slot's confirmed position skips what is already here.
-- Not marked for pg_dump (like rppd_wake): a restored database starts with a new slot,
-- whose positions have nothing to do with the old server's.
CREATE TABLE @extschema@.rppd_wal_position (
  id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  lsn pg_lsn NOT NULL DEFAULT '0/0',
  written_at timestamptz
);
INSERT INTO @extschema@.rppd_wal_position DEFAULT VALUES;
COMMENT ON TABLE @extschema@.rppd_wal_position IS 'WAL capture: the commit end LSN of the last decoded transaction the master wrote to rppd_event_queue';

-- Publication names are per database, slot names per server: the slot's name carries a
-- hash of the database and schema, so two databases with an rppd schema of the same name
-- keep separate slots.
CREATE FUNCTION @extschema@.rppd_wal_names(OUT publication text, OUT slot text) LANGUAGE sql STABLE AS $fn$
  SELECT 'rppd_' || n.nspname,
         'rppd_' || left(lower(regexp_replace(n.nspname, '[^a-zA-Z0-9_]', '_', 'g')), 40) || '_'
           || left(md5(current_database() || '/' || n.nspname), 8)
    FROM pg_catalog.pg_namespace n WHERE n.oid = '@extschema@'::regnamespace
$fn$;
COMMENT ON FUNCTION @extschema@.rppd_wal_names() IS 'the publication and the replication slot WAL capture uses for this schema';

-- Step 1 of 3, in its own transaction: the publication (empty). pgoutput looks it up as of
-- each decoded change, so it must exist before the slot does.
CREATE FUNCTION @extschema@.rppd_wal_prepare() RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
  names record := @extschema@.rppd_wal_names();
BEGIN
  IF current_setting('wal_level') <> 'logical' THEN
    RAISE EXCEPTION 'rppd: WAL capture needs wal_level = logical (it is %)', current_setting('wal_level')
      USING HINT = 'ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL; or keep the rppd_event() trigger';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = names.publication) THEN
    EXECUTE format('CREATE PUBLICATION %I', names.publication);
  END IF;
  RETURN names.publication;
END
$fn$;
COMMENT ON FUNCTION @extschema@.rppd_wal_prepare() IS 'WAL capture step 1 of 3, in its own transaction: creates the publication rppd_<schema>. Then rppd_wal_slot(), then rppd_wal_capture(table).';

-- Step 2 of 3, in its own transaction: PostgreSQL creates a logical slot only in a
-- transaction that has written nothing yet. Needs REPLICATION (or superuser).
-- keep = false drops the slot: WAL capture stops, tables still in the publication lose
-- their events until they are back on the trigger (rppd_wal_capture(t, false)).
CREATE FUNCTION @extschema@.rppd_wal_slot(keep bool DEFAULT true) RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
  names record := @extschema@.rppd_wal_names();
  exists_ bool;
BEGIN
  SELECT true INTO exists_ FROM pg_catalog.pg_replication_slots WHERE slot_name = names.slot;
  IF keep THEN
    IF exists_ THEN
      RETURN names.slot;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = names.publication) THEN
      RAISE EXCEPTION 'rppd: publication % is missing', names.publication
        USING HINT = format('run SELECT %s.rppd_wal_prepare() first, in its own transaction', '@extschema@');
    END IF;
    PERFORM pg_catalog.pg_create_logical_replication_slot(names.slot, 'pgoutput');
    -- A new slot starts after every position recorded for an old one.
    UPDATE @extschema@.rppd_wal_position SET lsn = '0/0', written_at = NULL;
  ELSIF exists_ THEN
    PERFORM pg_catalog.pg_drop_replication_slot(names.slot);
  END IF;
  RETURN names.slot;
END
$fn$;
COMMENT ON FUNCTION @extschema@.rppd_wal_slot(bool) IS 'WAL capture step 2 of 3, in its own transaction that has written nothing: creates the logical slot (needs REPLICATION); false drops it';

-- Step 3: a table moves from the trigger to the WAL (capture = true) or back. In one
-- transaction with the rppd_event() triggers dropped (or created): every change is
-- captured exactly once, by the trigger before this commit and from the WAL after it.
-- REPLICA IDENTITY FULL puts the whole old row in the WAL, so UPDATE and DELETE events
-- carry old_row as the trigger's do (and unchanged TOASTed values of new_row).
CREATE FUNCTION @extschema@.rppd_wal_capture(tbl regclass, capture bool DEFAULT true) RETURNS text
LANGUAGE plpgsql AS $fn$
DECLARE
  names record := @extschema@.rppd_wal_names();
  trg record;
  member bool;
BEGIN
  SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
                  WHERE p.pubname = names.publication AND pr.prrelid = tbl) INTO member;
  IF capture THEN
    IF current_setting('wal_level') <> 'logical' THEN
      RAISE EXCEPTION 'rppd: WAL capture needs wal_level = logical (it is %)', current_setting('wal_level')
        USING HINT = 'ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL; or keep the rppd_event() trigger';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = names.slot) THEN
      RAISE EXCEPTION 'rppd: replication slot % is missing: changes of % would not be kept', names.slot, tbl
        USING HINT = format('run SELECT %1$s.rppd_wal_prepare(); and SELECT %1$s.rppd_wal_slot(); first, each in its own transaction', '@extschema@');
    END IF;
    FOR trg IN SELECT t.tgname FROM pg_catalog.pg_trigger t
                WHERE t.tgrelid = tbl AND NOT t.tgisinternal AND t.tgfoid = '@extschema@.rppd_event()'::regprocedure LOOP
      EXECUTE format('DROP TRIGGER %I ON %s', trg.tgname, tbl);
      RAISE NOTICE 'rppd: dropped trigger % on %: its changes come from the WAL now', trg.tgname, tbl;
    END LOOP;
    IF (SELECT relreplident FROM pg_catalog.pg_class WHERE oid = tbl) <> 'f' THEN
      EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', tbl);
    END IF;
    IF NOT member THEN
      EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', names.publication, tbl);
    END IF;
    RETURN format('%s: captured from the WAL (slot %s)', tbl, names.slot);
  END IF;
  IF member THEN
    EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', names.publication, tbl);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                  WHERE t.tgrelid = tbl AND NOT t.tgisinternal AND t.tgfoid = '@extschema@.rppd_event()'::regprocedure) THEN
    EXECUTE format('CREATE TRIGGER rppd_event AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s.rppd_event()', tbl, '@extschema@');
    EXECUTE format('CREATE TRIGGER rppd_event_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s.rppd_event()', tbl, '@extschema@');
  END IF;
  RETURN format('%s: captured by the rppd_event() trigger', tbl);
END
$fn$;
COMMENT ON FUNCTION @extschema@.rppd_wal_capture(regclass, bool) IS 'WAL capture step 3: true moves the table from the rppd_event() trigger to the WAL (drops the trigger, REPLICA IDENTITY FULL, adds it to the publication); false moves it back (creates the triggers)';

CREATE OR REPLACE FUNCTION @extschema@.rppd_schema_version() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '1.3.0'::text $$;
