"""Security scanning: the queue and workers, the scanners (malware, pickles, secrets), findings."""
