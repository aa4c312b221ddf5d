"""The table ``python -m custom_nets demo`` prints: mean DSC, mean NSD, then the DSC of every class, in %."""

from custom_nets.demo import results_table

LABELS = {"0": "background", "1": "liver", "2": "tumour"}


def _summary(mean_dsc, mean_nsd, liver, tumour):
    """The parts of a ``summary.json`` the table reads (a class undefined in every case has a null mean)."""
    return {"mean_dsc": mean_dsc, "mean_nsd": mean_nsd,
            "per_class": {"liver": {"dsc": {"mean": liver}}, "tumour": {"dsc": {"mean": tumour}}}}


def test_demo_table_columns_and_values():
    rows = [("from scratch", _summary(0.6666666666666666, 0.88453, 0.8333333, 0.5)),
            ("S3D pre-trained", _summary(0.7, 0.9, 0.7, None))]
    assert results_table(rows, LABELS).splitlines() == [
        "| method | mean DSC | mean NSD | DSC liver | DSC tumour |",
        "|---|---|---|---|---|",
        "| from scratch | 66.67 | 88.45 | 83.33 | 50.00 |",
        "| S3D pre-trained | 70.00 | 90.00 | 70.00 | - |",
    ]
