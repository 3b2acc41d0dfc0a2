/*
 * mock-cluster.c - test helper: hosts librdkafka's mock Kafka cluster
 * (rdkafka_mock.h) on 127.0.0.1 so the tests speak the real Kafka wire
 * protocol without a Kafka install.
 *
 *   mock-cluster [-b BROKERS] [-t TOPIC] [-p PARTITIONS] [-r REPLICAS] [-c FIFO]
 *
 * Prints "bootstrap HOST:PORT,..." on stdout once the brokers listen and the
 * topic exists, then reads commands, one a line, from FIFO (opened read-write
 * so writers may come and go) or else from stdin:
 *   down N | down all     rd_kafka_mock_broker_set_down (N = broker id, 1..)
 *   up N | up all         rd_kafka_mock_broker_set_up
 *   rtt N MS              rd_kafka_mock_broker_set_rtt
 *   topic NAME PARTS      create another topic
 * and answers each with "ok ..." or "error ..." on stdout. Runs until SIGTERM
 * or SIGINT ("quit" on the control channel too).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: mock-cluster [-b BROKERS] [-t TOPIC] [-p PARTITIONS] "
                    "[-r REPLICAS] [-c FIFO]\n");
}

static int parse_broker(const char *s, int brokers, int32_t *id)
{
    char *end;
    long v;
    if (strcmp(s, "all") == 0 || strcmp(s, "-1") == 0) {
        *id = -1;
        return 0;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > brokers) return -1;
    *id = (int32_t)v;
    return 0;
}

static void reply(const char *fmt, const char *a, const char *b)
{
    printf(fmt, a, b);
    fputc('\n', stdout);
    fflush(stdout);
}

/* run one control line */
static void command(rd_kafka_mock_cluster_t *mc, int brokers, char *line)
{
    char *save = NULL;
    char *cmd = strtok_r(line, " \t\r\n", &save);
    char *arg1 = cmd ? strtok_r(NULL, " \t\r\n", &save) : NULL;
    char *arg2 = arg1 ? strtok_r(NULL, " \t\r\n", &save) : NULL;
    int32_t id;
    rd_kafka_resp_err_t err;

    if (!cmd || cmd[0] == '#') return;
    if (strcmp(cmd, "quit") == 0) {
        stop_requested = 1;
        reply("ok %s%s", cmd, "");
        return;
    }
    if (strcmp(cmd, "down") == 0 || strcmp(cmd, "up") == 0 || strcmp(cmd, "rtt") == 0) {
        if (!arg1 || parse_broker(arg1, brokers, &id) != 0) {
            reply("error %s: broker id 1..N or all expected%s", cmd, "");
            return;
        }
        if (strcmp(cmd, "down") == 0) {
            err = rd_kafka_mock_broker_set_down(mc, id);
        } else if (strcmp(cmd, "up") == 0) {
            err = rd_kafka_mock_broker_set_up(mc, id);
        } else {
            char *end;
            long ms = arg2 ? strtol(arg2, &end, 10) : -1;
            if (!arg2 || *end || ms < 0 || ms > 600000) {
                reply("error %s: milliseconds 0..600000 expected%s", cmd, "");
                return;
            }
            err = rd_kafka_mock_broker_set_rtt(mc, id, (int)ms);
        }
        if (err)
            reply("error %s: %s", cmd, rd_kafka_err2str(err));
        else
            reply("ok %s %s", cmd, arg1);
        return;
    }
    if (strcmp(cmd, "topic") == 0) {
        char *end;
        long parts = arg2 ? strtol(arg2, &end, 10) : -1;
        if (!arg1 || !arg2 || *end || parts < 1 || parts > 1000) {
            reply("error %s: NAME PARTITIONS expected%s", cmd, "");
            return;
        }
        err = rd_kafka_mock_topic_create(mc, arg1, (int)parts, brokers < 3 ? brokers : 3);
        if (err)
            reply("error topic: %s%s", rd_kafka_err2str(err), "");
        else
            reply("ok topic %s%s", arg1, "");
        return;
    }
    reply("error unknown command %s (down|up|rtt|topic|quit)%s", cmd, "");
}

int main(int argc, char **argv)
{
    const char *topic = "kafka-chat", *fifo = NULL;
    int brokers = 3, partitions = 6, replicas = 3, opt, fd = STDIN_FILENO;
    char errstr[256], buf[4096];
    size_t used = 0;
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    rd_kafka_resp_err_t err;
    struct sigaction sa;

    while ((opt = getopt(argc, argv, "b:t:p:r:c:h")) != -1) {
        switch (opt) {
        case 'b':
            brokers = atoi(optarg);
            break;
        case 't':
            topic = optarg;
            break;
        case 'p':
            partitions = atoi(optarg);
            break;
        case 'r':
            replicas = atoi(optarg);
            break;
        case 'c':
            fifo = optarg;
            break;
        default:
            usage();
            return opt == 'h' ? 0 : 2;
        }
    }
    if (brokers < 1 || brokers > 16 || partitions < 1 || partitions > 1000 || replicas < 1 ||
        replicas > brokers) {
        fprintf(stderr, "mock-cluster: need 1 <= brokers <= 16, 1 <= partitions <= 1000, "
                        "1 <= replicas <= brokers\n");
        return 2;
    }

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0) {
        perror("mock-cluster: sigaction");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    if (fifo) {
        fd = open(fifo, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, "mock-cluster: cannot open control FIFO %s: %s\n", fifo,
                    strerror(errno));
            return 1;
        }
    }

    /* the mock cluster lives inside a client instance (bookkeeping only) */
    conf = rd_kafka_conf_new();
    /* log_level 4: no notice that this bookkeeping client has no brokers */
    if (rd_kafka_conf_set(conf, "client.id", "mock-cluster", errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "mock-cluster: %s\n", errstr);
        return 1;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        fprintf(stderr, "mock-cluster: rd_kafka_new: %s\n", errstr);
        return 1;
    }
    mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "mock-cluster: cannot create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    err = rd_kafka_mock_topic_create(mc, topic, partitions, replicas);
    if (err) {
        fprintf(stderr, "mock-cluster: cannot create topic %s: %s\n", topic, rd_kafka_err2str(err));
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        return 1;
    }
    printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    while (!stop_requested) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = fd >= 0 ? poll(&pfd, 1, 200) : poll(NULL, 0, 200);
        if (n < 0 && errno != EINTR) {
            perror("mock-cluster: poll");
            break;
        }
        if (n <= 0) continue;
        ssize_t r = read(fd, buf + used, sizeof buf - 1 - used);
        if (r == 0) {
            fd = -1; /* stdin closed: keep serving until a signal */
            continue;
        }
        if (r < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                perror("mock-cluster: read");
                fd = -1;
            }
            continue;
        }
        used += (size_t)r;
        buf[used] = '\0';
        char *start = buf, *nl;
        while ((nl = strchr(start, '\n'))) {
            *nl = '\0';
            command(mc, brokers, start);
            start = nl + 1;
        }
        used = strlen(start);
        memmove(buf, start, used + 1);
        if (used >= sizeof buf - 1) {
            reply("error line too long%s%s", "", "");
            used = 0;
        }
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
