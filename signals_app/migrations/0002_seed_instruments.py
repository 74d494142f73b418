from decimal import Decimal

from django.db import migrations

# symbol, description, digits, pip size, contract size (units per 1.00 lot).
# FX pips are the 4th decimal (2nd for JPY pairs); gold's pip is 0.1 on a
# 100 oz lot, silver's 0.01 on 5,000 oz; index and crypto pips are one point
# of the quote (crypto: ETH 0.1) on a 1-unit contract.
INSTRUMENTS = [
    ("EURUSD", "Euro / US Dollar", 5, "0.0001", "100000"),
    ("GBPUSD", "British Pound / US Dollar", 5, "0.0001", "100000"),
    ("AUDUSD", "Australian Dollar / US Dollar", 5, "0.0001", "100000"),
    ("NZDUSD", "New Zealand Dollar / US Dollar", 5, "0.0001", "100000"),
    ("USDCAD", "US Dollar / Canadian Dollar", 5, "0.0001", "100000"),
    ("USDCHF", "US Dollar / Swiss Franc", 5, "0.0001", "100000"),
    ("USDJPY", "US Dollar / Japanese Yen", 3, "0.01", "100000"),
    ("XAUUSD", "Gold / US Dollar", 2, "0.1", "100"),
    ("XAGUSD", "Silver / US Dollar", 3, "0.01", "5000"),
    ("US30", "Dow Jones Industrial Average", 2, "1", "1"),
    ("US500", "S&P 500", 2, "1", "1"),
    ("US100", "Nasdaq 100", 2, "1", "1"),
    ("BTCUSD", "Bitcoin / US Dollar", 2, "1", "1"),
    ("ETHUSD", "Ether / US Dollar", 2, "0.1", "1"),
]


def seed(apps, schema_editor):
    Instrument = apps.get_model("signals_app", "Instrument")
    for symbol, description, digits, pip_size, contract_size in INSTRUMENTS:
        Instrument.objects.update_or_create(
            symbol=symbol,
            defaults={
                "description": description,
                "digits": digits,
                "pip_size": Decimal(pip_size),
                "contract_size": Decimal(contract_size),
            },
        )


class Migration(migrations.Migration):
    dependencies = [("signals_app", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
