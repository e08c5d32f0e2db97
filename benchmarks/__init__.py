"""Benchmarks: sendai_async against the raw aiohttp + orjson floor and an httpx + pydantic peer."""
