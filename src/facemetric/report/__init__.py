"""Reports: plots (PNG) and HTML pages built from JSON results."""
