"""The intake gate: every uploaded file set checked against its channel and its certificate."""
