"""What every JSON route shares: the Hub's error format, authentication, pagination, URLs."""
