"""Test support: process harness, chaos harness, test data helpers and the local stand-ins for outside
services. Used by tests, bench/ and `make run`; not shipped in the image."""
