/*
 * fim-probe: reports the process state that the end-to-end tests check
 * from inside a container.
 *
 * Usage:
 *   fim-probe            print the report below as key=value lines
 *   fim-probe segv       die from a SIGSEGV raised by the kernel
 *   fim-probe setgroups  call setgroups() with the current gid
 *   fim-probe tty        print the process group and the terminal's
 *                        foreground process group of stdin
 *
 * A key may appear on several lines (uid_map, mount, proc); the tests read
 * every line of a key as a list. The program is linked statically so that
 * it runs in any image, and it uses no NSS lookups for the same reason.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* Print each line of PATH as KEY=LINE with runs of blanks collapsed. */
static void print_file_lines(const char *key, const char *path)
{
    FILE *file = fopen(path, "re");
    if (file == NULL) {
        printf("%s_error=%s: %s\n", key, path, strerror(errno));
        return;
    }

    char line[4096];
    while (fgets(line, sizeof line, file) != NULL) {
        char collapsed[sizeof line];
        size_t length = 0;
        int in_blank = 1;
        for (const char *c = line; *c != '\0' && *c != '\n'; c++) {
            if (isspace((unsigned char)*c)) {
                in_blank = 1;
                continue;
            }
            if (in_blank && length > 0)
                collapsed[length++] = ' ';
            in_blank = 0;
            collapsed[length++] = *c;
        }
        collapsed[length] = '\0';
        printf("%s=%s\n", key, collapsed);
    }
    fclose(file);
}

/* Print the /proc/self/status fields that describe privileges. */
static void print_status_fields(void)
{
    static const char *const fields[] = {
        "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
    };
    FILE *file = fopen("/proc/self/status", "re");
    if (file == NULL) {
        printf("status_error=/proc/self/status: %s\n", strerror(errno));
        return;
    }

    char line[4096];
    while (fgets(line, sizeof line, file) != NULL) {
        char *colon = strchr(line, ':');
        if (colon == NULL)
            continue;
        *colon = '\0';
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
            if (strcmp(line, fields[i]) != 0)
                continue;
            char *value = colon + 1;
            while (isspace((unsigned char)*value))
                value++;
            value[strcspn(value, "\n")] = '\0';
            printf("%s=%s\n", fields[i], value);
        }
    }
    fclose(file);
}

/*
 * Print one mount=POINT FSTYPE MOUNT_OPTIONS SUPER_OPTIONS line per entry of
 * /proc/self/mountinfo. The mount point keeps the kernel's octal escapes.
 */
static void print_mounts(void)
{
    FILE *file = fopen("/proc/self/mountinfo", "re");
    if (file == NULL) {
        printf("mount_error=/proc/self/mountinfo: %s\n", strerror(errno));
        return;
    }

    char line[8192];
    while (fgets(line, sizeof line, file) != NULL) {
        line[strcspn(line, "\n")] = '\0';

        /* Fields: id parent major:minor root point options [optional...] - type source super */
        char *fields[16];
        size_t count = 0;
        char *saveptr = NULL;
        for (char *token = strtok_r(line, " ", &saveptr); token != NULL && count < 16;
             token = strtok_r(NULL, " ", &saveptr))
            fields[count++] = token;
        if (count < 7)
            continue;

        size_t separator = 6;
        while (separator < count && strcmp(fields[separator], "-") != 0)
            separator++;
        if (separator + 1 >= count)
            continue;

        const char *fstype = fields[separator + 1];
        const char *super_options = separator + 3 < count ? fields[separator + 3] : "";
        printf("mount=%s %s %s %s\n", fields[4], fstype, fields[5], super_options);
    }
    fclose(file);
}

/* Print one proc=PID COMM line per process visible in /proc. */
static void print_processes(void)
{
    DIR *proc = opendir("/proc");
    if (proc == NULL) {
        printf("proc_error=/proc: %s\n", strerror(errno));
        return;
    }

    struct dirent *entry;
    while ((entry = readdir(proc)) != NULL) {
        if (!isdigit((unsigned char)entry->d_name[0]))
            continue;

        char path[PATH_MAX];
        snprintf(path, sizeof path, "/proc/%s/comm", entry->d_name);
        char comm[256] = "?";
        FILE *file = fopen(path, "re");
        if (file != NULL) {
            if (fgets(comm, sizeof comm, file) == NULL)
                strcpy(comm, "?");
            comm[strcspn(comm, "\n")] = '\0';
            fclose(file);
        }
        printf("proc=%s %s\n", entry->d_name, comm);
    }
    closedir(proc);
}

static void print_groups(void)
{
    gid_t groups[NGROUPS_MAX];
    int count = getgroups(NGROUPS_MAX, groups);
    printf("groups=");
    for (int i = 0; i < count; i++)
        printf("%s%u", i > 0 ? "," : "", (unsigned)groups[i]);
    printf("\n");
}

static int report(void)
{
    printf("uid=%u\n", (unsigned)getuid());
    printf("euid=%u\n", (unsigned)geteuid());
    printf("gid=%u\n", (unsigned)getgid());
    printf("egid=%u\n", (unsigned)getegid());
    print_groups();
    printf("pid=%d\n", (int)getpid());
    printf("ppid=%d\n", (int)getppid());

    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) != NULL)
        printf("cwd=%s\n", cwd);
    else
        printf("cwd_error=%s\n", strerror(errno));

    print_file_lines("uid_map", "/proc/self/uid_map");
    print_file_lines("gid_map", "/proc/self/gid_map");
    print_file_lines("setgroups", "/proc/self/setgroups");
    print_status_fields();
    print_mounts();
    print_processes();
    return fflush(stdout) == 0 ? 0 : 1;
}

static int crash_with_segv(void)
{
    fflush(stdout);
    volatile int *invalid = NULL;
    *invalid = 1;
    return 1;
}

/* Package managers call setgroups() while dropping privileges; report whether it works. */
static int try_setgroups(void)
{
    gid_t group = getgid();
    if (setgroups(1, &group) != 0) {
        printf("setgroups_result=%s\n", strerror(errno));
        return 1;
    }
    printf("setgroups_result=ok\n");
    return 0;
}

static int report_terminal(void)
{
    printf("pid=%d\n", (int)getpid());
    printf("pgrp=%d\n", (int)getpgrp());
    printf("foreground_pgrp=%d\n", (int)tcgetpgrp(STDIN_FILENO));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return report();
    if (strcmp(argv[1], "segv") == 0)
        return crash_with_segv();
    if (strcmp(argv[1], "setgroups") == 0)
        return try_setgroups();
    if (strcmp(argv[1], "tty") == 0)
        return report_terminal();

    fprintf(stderr, "fim-probe: unknown mode '%s'; expected no argument, segv, setgroups or tty\n",
            argv[1]);
    return 2;
}
