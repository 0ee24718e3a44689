"""Upkeep of the content-addressed store as a whole, LFS objects and Xet xorbs together: garbage
collection by reachability (`gc`) and re-verification of every stored byte (`fsck`). It sits above
both `lfs` and `xet`, which it reads."""
