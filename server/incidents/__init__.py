"""Incidents for operators and policy engines: the event feed, and the ONAP control-loop publisher."""
