#include "mr_sched.h"

void mr_sched_init(mr_scheduler *s, const int64_t *offsets, int64_t n_seqs, int64_t max_tokens) {
    s->offsets = offsets;
    s->n_seqs = n_seqs;
    s->max_tokens = max_tokens;
    s->seq = 0;
    s->pos = 0;
}

int64_t mr_sched_next(mr_scheduler *s, mr_segment *segs, int64_t *step_tokens) {
    int64_t n = 0, room = s->max_tokens, row = 0;
    while (room > 0 && s->seq < s->n_seqs) {
        int64_t length = s->offsets[s->seq + 1] - s->offsets[s->seq];
        int64_t left = length - s->pos;
        if (left <= 0) { /* empty sequence, or finished */
            s->seq++;
            s->pos = 0;
            continue;
        }
        int64_t take = left < room ? left : room;
        mr_segment *g = &segs[n++];
        g->seq = s->seq;
        g->start = s->pos;
        g->len = take;
        g->row = row;
        g->first = s->pos == 0;
        g->last = take == left;
        row += take;
        room -= take;
        s->pos += take;
        if (g->last) {
            s->seq++;
            s->pos = 0;
        }
    }
    *step_tokens = row;
    return n;
}
