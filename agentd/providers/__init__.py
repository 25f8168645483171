"""Model providers. Each adapter keeps its wire format to itself."""
from agentd.providers.base import Provider, ProviderChunk, ProviderError

__all__ = ["Provider", "ProviderChunk", "ProviderError"]
