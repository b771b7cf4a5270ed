"""Test tooling: a fake OpenAI-compatible server and a fault-injecting proxy on 127.0.0.1, and a fake `vllm`."""
