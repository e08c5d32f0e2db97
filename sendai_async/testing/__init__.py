"""Test support for users of sendai_async: a local sandbox server and a pytest plugin."""
