"""Git LFS: the batch API, pre-signed basic and multipart uploads, and which repo holds which object."""
