"""What a running role says about itself: the admin endpoints ``/_esproxy/health|stats|metrics``,
the health verdict, and the SIGUSR1 profiles. Uses clients/ and core/.
"""
