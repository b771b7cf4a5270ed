"""Test tooling on 127.0.0.1: a fake OpenAI-compatible server and a fault-injecting proxy."""
