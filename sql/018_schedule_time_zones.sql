-- 018: a schedule's cron read on the clock of a time zone of its own (an
-- IANA name such as Europe/Berlin), UTC unless set: "every day at 02:00"
-- means the operator's 02:00 through daylight saving time. A zone changed
-- by SQL is read again, as a changed cron is (sql/017's trigger).
ALTER TABLE worker.schedules
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC',
    ADD CONSTRAINT schedules_time_zone_valid CHECK (length(time_zone) BETWEEN 1 AND 64);

DROP TRIGGER schedules_cron_changed ON worker.schedules;
CREATE TRIGGER schedules_cron_changed
    BEFORE UPDATE OF cron, time_zone ON worker.schedules
    FOR EACH ROW WHEN (OLD.cron IS DISTINCT FROM NEW.cron OR OLD.time_zone IS DISTINCT FROM NEW.time_zone)
    EXECUTE FUNCTION worker.schedules_cron_changed();
