# The site-message checks the server and the relay share (server/site_msg.h).
fednas_unit_test(test_site_msg SOURCES unit/test_site_msg.c LIBS fednas_server)
