"""Model providers. Each adapter keeps its wire format to itself."""
from agentd.providers.base import HttpProvider, Provider, ProviderChunk, ProviderError

__all__ = ["HttpProvider", "Provider", "ProviderChunk", "ProviderError"]
