from django.db import migrations

# The audit log is append-only in the database itself, not just in the admin:
# no DELETE, and UPDATE only of secret_data (key rotation re-encrypts it).
SQL = """
CREATE FUNCTION signals_app_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit log is append-only: DELETE refused';
    END IF;
    IF (NEW.id, NEW.occurred_at, NEW.actor_kind, NEW.actor, NEW.action,
        NEW.subject_type, NEW.subject_id, NEW.data)
       IS DISTINCT FROM
       (OLD.id, OLD.occurred_at, OLD.actor_kind, OLD.actor, OLD.action,
        OLD.subject_type, OLD.subject_id, OLD.data) THEN
        RAISE EXCEPTION 'audit log is append-only: only secret_data may be re-encrypted';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER signals_app_auditevent_append_only
    BEFORE UPDATE OR DELETE ON signals_app_auditevent
    FOR EACH ROW EXECUTE FUNCTION signals_app_auditevent_append_only();
"""

REVERSE_SQL = """
DROP TRIGGER IF EXISTS signals_app_auditevent_append_only ON signals_app_auditevent;
DROP FUNCTION IF EXISTS signals_app_auditevent_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("signals_app", "0002_seed_instruments")]

    operations = [migrations.RunSQL(SQL, REVERSE_SQL)]
