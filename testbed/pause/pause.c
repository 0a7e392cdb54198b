/*
 * The pod sandbox process of the kfn test bed ("pause"): it holds the pod's
 * namespaces open, reaps zombies when it is PID 1 of a shared process
 * namespace, and exits cleanly on SIGINT/SIGTERM. Built statically by
 * testbed/build-k8s.sh so the pause image needs no registry and no libc.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  /* Reap every exited child: with shareProcessNamespace the runtime's orphans land here. */
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("kfn-pause 1");
    return 0;
  }
  if (getpid() != 1) {
    /* Not an error, but worth saying: zombies are only reaped as PID 1. */
    fprintf(stderr, "kfn-pause: warning: not PID 1\n");
  }
  struct sigaction term = {.sa_handler = on_term};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0) {
    fprintf(stderr, "kfn-pause: sigaction: %s\n", strerror(errno));
    return 1;
  }
  for (;;) {
    pause();
  }
}
