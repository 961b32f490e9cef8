#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_level = -1;
static char g_tag[32] = "fednas";
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

int log_level_parse(const char *name)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

void log_set_level(log_level_t level) { g_level = (int)level; }

void log_set_tag(const char *tag)
{
    pthread_mutex_lock(&g_lock);
    snprintf(g_tag, sizeof g_tag, "%s", tag);
    pthread_mutex_unlock(&g_lock);
}

void log_msg(log_level_t level, const char *fmt, ...)
{
    if (g_level < 0) {
        int l = log_level_parse(getenv("FEDNAS_LOG"));
        g_level = l < 0 ? LOG_INFO : l;
    }
    if ((int)level < g_level)
        return;
    static const char *label[] = {"debug", "info", "warn", "error"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %-5s [%s] ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, label[level], g_tag);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && n < (int)sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_lock);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
    pthread_mutex_unlock(&g_lock);
}
