/* media.c — a sample's local image file, for the console's preview, read from under --media-root only.
 *
 * A sample's meta `uri` may name a local file: an absolute path, a path relative
 * to the media root, or a file: URL. The console shows it when it is an image
 * (PNG, JPEG, GIF, WebP) whose real path, symbolic links and `..` resolved, lies
 * below the media root. The check is made twice: on the resolved name
 * (realpath) before opening, and on the file actually opened (its
 * /proc/self/fd link) after, so that a link swapped in between cannot lead
 * outside. Every refusal is the same 404: a client learns nothing about files
 * it may not read.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_internal.h"
#include "jtext.h"

#define MEDIA_MAX ((off_t)64 << 20) /* larger files are not previewed */

static const struct {
  const char *ext;
  const char *type;
} media_types[] = {
    {".png", "image/png"}, {".jpg", "image/jpeg"}, {".jpeg", "image/jpeg"}, {".gif", "image/gif"}, {".webp", "image/webp"},
};

/* The image media type of path by its extension (any case), or NULL. */
static const char *media_type(const char *path) {
  const char *dot = strrchr(path, '.');
  if (!dot || strchr(dot, '/')) return NULL;
  for (size_t i = 0; i < sizeof media_types / sizeof media_types[0]; i++)
    if (strcasecmp(dot, media_types[i].ext) == 0) return media_types[i].type;
  return NULL;
}

/* Whether path (resolved) is root itself's descendant. */
static int below(const char *path, const char *root) {
  size_t n = strlen(root);
  if (n == 1 && root[0] == '/') return path[0] == '/' && path[1] != '\0';
  return strncmp(path, root, n) == 0 && path[n] == '/' && path[n + 1] != '\0';
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* The file name uri stands for, into out (n bytes): root-relative or absolute
 * as given, a file: URL's path percent-decoded. Returns 0, or -1 when uri is
 * not a local file (another scheme, a file: URL with a host, NUL, too long). */
static int media_path(const char *uri, const char *root, char *out, size_t n) {
  const char *p = uri;
  char decoded[PATH_MAX];
  if (strncasecmp(uri, "file:", 5) == 0) {
    p = uri + 5;
    if (strncmp(p, "//", 2) == 0) {
      p += 2;
      if (strncasecmp(p, "localhost/", 10) == 0) p += 9;
      else if (*p != '/') return -1; /* another host's file */
    }
    size_t j = 0;
    for (; *p && j + 1 < sizeof decoded; p++) {
      if (*p == '%') {
        int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
        if (lo < 0 || (hi == 0 && lo == 0)) return -1;
        decoded[j++] = (char)(hi * 16 + lo);
        p += 2;
      } else {
        decoded[j++] = *p;
      }
    }
    if (*p) return -1;
    decoded[j] = '\0';
    p = decoded;
  } else {
    /* a scheme (http:, s3:) is not a local file; one letter before ':' is a Windows drive, not ours either */
    const char *colon = strchr(uri, ':'), *slash = strchr(uri, '/');
    if (colon && (!slash || colon < slash)) return -1;
  }
  if (!*p) return -1;
  int w = p[0] == '/' ? snprintf(out, n, "%s", p) : snprintf(out, n, "%s/%s", root, p);
  return w < 0 || (size_t)w >= n ? -1 : 0;
}

int api_media(http_req *rq, http_resp *resp) {
  char uri[PATH_MAX], path[PATH_MAX], real[PATH_MAX], opened[PATH_MAX], link[64];
  const char *root = api_cfg->media_root;
  const st_dataset *ds;
  uint32_t key;
  if (api_sample(rq, resp, &ds, &key) != 0) return 0;
  if (!root[0]) {
    st_release(ds);
    return api_fail(resp, rq, P_NOT_FOUND, NULL, "focald serves no local files (start it with --media-root)");
  }
  uri[0] = '\0';
  const char *meta = st_meta(ds, (uint32_t)key);
  json_t *m = meta ? jtext_loads(meta, 0, NULL, NULL) : NULL;
  const char *u = json_string_value(json_object_get(m, "uri"));
  if (u && strlen(u) < sizeof uri) snprintf(uri, sizeof uri, "%s", u);
  json_decref(m);
  st_release(ds);
  if (meta && !m) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory reading the sample's meta");

  const char *why = NULL;
  const char *type = NULL;
  int fd = -1;
  struct stat st;
  if (!uri[0] || media_path(uri, root, path, sizeof path) != 0) why = "the sample's meta names no local file";
  else if (!realpath(path, real) || !below(real, root)) why = "the sample's file is not under --media-root";
  else if (!(type = media_type(real))) why = "the sample's file is not an image the console previews (png, jpeg, gif, webp)";
  else if ((fd = open(real, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)) < 0) why = "the sample's file cannot be opened";
  else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MEDIA_MAX) why = "the sample's file is not a regular file of at most 64 MiB";
  if (!why) {
    /* what was opened, whatever was swapped in since realpath looked */
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t ln = readlink(link, opened, sizeof opened - 1);
    if (ln <= 0 || (size_t)ln >= sizeof opened - 1) why = "the sample's file is not under --media-root";
    else {
      opened[ln] = '\0';
      if (!below(opened, root)) why = "the sample's file is not under --media-root";
    }
  }
  if (why) {
    if (fd >= 0) close(fd);
    return api_fail(resp, rq, P_NOT_FOUND, NULL, "%s", why);
  }
  char *body = malloc((size_t)st.st_size + 1);
  if (!body) {
    close(fd);
    return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  }
  size_t got = 0;
  while (got < (size_t)st.st_size) {
    ssize_t r = read(fd, body + got, (size_t)st.st_size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (got != (size_t)st.st_size) {
    free(body);
    return api_fail(resp, rq, P_NOT_FOUND, NULL, "the sample's file changed while it was read");
  }
  resp->status = 200;
  resp->content_type = type;
  resp->body = body;
  resp->len = got;
  http_header(resp, "X-Content-Type-Options", "nosniff");
  http_header(resp, "Content-Security-Policy", "default-src 'none'; sandbox");
  http_header(resp, "Cache-Control", "private, no-cache");
  return 0;
}
