# web/: the dashboard's REST API, embedded assets and start/stop over real HTTP on 127.0.0.1.
fednas_unit_test(test_web_api SOURCES unit/test_web_api.c LIBS fednas_web)
