# The site registry against a peer that never reads (issue 12): no blocking send, a full queue
# drops the peer, repeated hellos are ignored, a new connection rejoins.
fednas_unit_test(test_sites SOURCES unit/test_sites.c LIBS fednas_server)
# The log limit on refused peers (issue 12): a key refused in a loop does not flood the log.
fednas_unit_test(test_zap_limit SOURCES unit/test_zap_limit.c LIBS fednas_server)
