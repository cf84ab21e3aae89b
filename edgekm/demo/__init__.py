"""``edgekm demo``: a whole fleet on one machine (the run, its text report, its HTML report)."""
