import django.db.models.deletion
from django.db import migrations, models

import signals_app.fields


class Migration(migrations.Migration):
    """Fewer index entries written per close queued (a mass breach queues thousands in one
    statement): a position's status change no longer writes to ``position_live_by_signal``
    (a signal's positions are found by the ``signal`` key's index, at most one per client)
    or to an index of ``instrument`` alone (``position_live_by_instrument`` leads with it);
    a new close command writes no null ``completed_at`` entry and none in an index of
    ``device`` alone (``close_pending_by_device`` leads with it); a plan with no partial hit
    stores no encrypted empty map (null)."""

    dependencies = [
        ("ea_gateway", "0001_initial"),
        ("positions", "0014_guard_choices_merged"),
        ("signals_app", "0013_audit_action_index_without_pattern_ops"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="openposition", name="position_live_by_signal"),
        migrations.AlterField(
            model_name="openposition",
            name="instrument",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="positions",
                to="signals_app.instrument",
            ),
        ),
        migrations.AlterField(
            model_name="closecommand",
            name="device",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="close_commands",
                to="ea_gateway.device",
            ),
        ),
        migrations.RemoveIndex(model_name="closecommand", name="close_by_completed_at"),
        migrations.AddIndex(
            model_name="closecommand",
            index=models.Index(
                condition=models.Q(("completed_at__isnull", False)),
                fields=["completed_at"],
                name="close_by_completed_at",
            ),
        ),
        migrations.AlterField(
            model_name="signalplan",
            name="partials_hit",
            field=signals_app.fields.EncryptedJSONField(
                blank=True,
                help_text="partial index -> the quote that hit it (near the level: encrypted); null: none hit yet",
                null=True,
            ),
        ),
    ]
