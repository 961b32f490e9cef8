# The site loop that client agents and simulation workers share (client/site.h) and the link
# upward (common/link.h): simulated sites rejoin a restarted server and stop on a wrong server key.
fednas_unit_test(test_site_loop SOURCES unit/test_site_loop.c LIBS fednas_client)
