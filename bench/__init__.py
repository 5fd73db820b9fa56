"""The benchmark: `wallet bench` (or `make bench`). Everything it reports is measured in one run."""
