"""Session API: validation shared by the gRPC and HTTP JSON front ends."""
