from django.db import migrations, models

# ``action`` had ``db_index=True``: on PostgreSQL that is two indexes, a btree and a
# ``varchar_pattern_ops`` one for LIKE, which no query uses. Every audit row (one per close
# queued) paid for both. The btree is kept under a name of its own (renamed, not rebuilt);
# the pattern index is dropped.
FORWARD = """
DROP INDEX IF EXISTS signals_app_auditevent_action_415e271b_like;
ALTER INDEX signals_app_auditevent_action_415e271b RENAME TO audit_by_action;
"""
BACKWARD = """
ALTER INDEX audit_by_action RENAME TO signals_app_auditevent_action_415e271b;
CREATE INDEX signals_app_auditevent_action_415e271b_like
    ON signals_app_auditevent (action varchar_pattern_ops);
"""


class Migration(migrations.Migration):
    dependencies = [("signals_app", "0012_client_risk_guard_limits")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(FORWARD, BACKWARD)],
            state_operations=[
                migrations.AlterField(
                    model_name="auditevent", name="action", field=models.CharField(max_length=40)
                ),
                migrations.AddIndex(
                    model_name="auditevent", index=models.Index(fields=["action"], name="audit_by_action")
                ),
            ],
        )
    ]
