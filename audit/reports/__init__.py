"""Report writers: run reports, n-gram reports."""
