"""The text report's lines that do not need a fleet run."""

from edgekm.demo.text_report import format_text


def test_the_compression_line_stays_true_both_ways():
    small = format_text({"bytes_uploaded": 1000, "bytes_raw": 250, "points": 10})
    line = [x for x in small.splitlines() if "bytes uploaded" in x][0]
    assert "400.0 % of raw, 4.0x more" in line and "less" not in line
    large = format_text({"bytes_uploaded": 250, "bytes_raw": 1000, "points": 10})
    assert "25.0 % of raw, 4.0x less" in large
