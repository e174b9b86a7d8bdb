/* watchdog.c: the thread that ticks every watched engine's epoch, and what
   fork() does to it. */

#define SW_MAX_ENGINES 8
static pthread_mutex_t sw_watchdog_lock = PTHREAD_MUTEX_INITIALIZER;
static sw_wasm_engine *sw_watched_as_given[SW_MAX_ENGINES];
/* Our own references (wasmtime_engine_clone): an engine the watchdog ticks
   cannot be freed under it, even while Python tears its objects down. */
static sw_wasm_engine *sw_watched[SW_MAX_ENGINES];
static int sw_n_watched;
static pthread_t sw_watchdog_thread;
static int sw_watchdog_stopping;
static int sw_watchdog_final; /* stopped at exit: never started again */

/* Threads do not survive fork(): each child gets a new generation, and the
   next guest call there (or install) starts the watchdog again. */
static unsigned sw_fork_generation = 1;
static unsigned sw_watchdog_generation; /* the generation its thread runs in; 0: none */

static void *sw_watchdog_main(void *unused)
{
    (void)unused;
    struct timespec tick = {0, SW_TICK_MS * 1000000L};
    while (!__atomic_load_n(&sw_watchdog_stopping, __ATOMIC_ACQUIRE)) {
        nanosleep(&tick, NULL);
        __atomic_add_fetch(&sw_ticks, 1, __ATOMIC_RELAXED);
        int n = __atomic_load_n(&sw_n_watched, __ATOMIC_ACQUIRE);
        for (int i = 0; i < n; i++)
            wt.engine_increment_epoch(sw_watched[i]);
    }
    return NULL;
}

/* With sw_watchdog_lock held. */
static int sw_watchdog_start_locked(void)
{
    if (sw_watchdog_generation == sw_fork_generation || sw_watchdog_final)
        return 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    __atomic_store_n(&sw_watchdog_stopping, 0, __ATOMIC_RELEASE);
    int rc = pthread_create(&sw_watchdog_thread, &attr, sw_watchdog_main, NULL) == 0 ? 0 : -1;
    pthread_attr_destroy(&attr);
    if (rc == 0)
        __atomic_store_n(&sw_watchdog_generation, sw_fork_generation, __ATOMIC_RELEASE);
    return rc;
}

/* The call path's check: one load and a compare unless this is a fresh fork child. */
static inline void sw_watchdog_ensure(void)
{
    if (__builtin_expect(__atomic_load_n(&sw_watchdog_generation, __ATOMIC_ACQUIRE) != sw_fork_generation, 0) &&
        __atomic_load_n(&sw_n_watched, __ATOMIC_ACQUIRE) > 0) {
        pthread_mutex_lock(&sw_watchdog_lock);
        sw_watchdog_start_locked();
        pthread_mutex_unlock(&sw_watchdog_lock);
    }
}

int sw_watchdog_watch(void *engine)
{
    int rc = 0;
    pthread_mutex_lock(&sw_watchdog_lock);
    int known = 0;
    for (int i = 0; i < sw_n_watched; i++)
        known |= sw_watched_as_given[i] == engine;
    if (!known) {
        if (sw_n_watched == SW_MAX_ENGINES) {
            rc = -1;
            goto out;
        }
        sw_watched_as_given[sw_n_watched] = engine;
        sw_watched[sw_n_watched] = wt.engine_clone(engine);
        __atomic_store_n(&sw_n_watched, sw_n_watched + 1, __ATOMIC_RELEASE);
    }
    rc = sw_watchdog_start_locked();
out:
    pthread_mutex_unlock(&sw_watchdog_lock);
    return rc;
}

void sw_watchdog_stop(void)
{
    pthread_mutex_lock(&sw_watchdog_lock);
    sw_watchdog_final = 1;
    if (sw_watchdog_generation == sw_fork_generation) {
        __atomic_store_n(&sw_watchdog_stopping, 1, __ATOMIC_RELEASE);
        pthread_join(sw_watchdog_thread, NULL);
        __atomic_store_n(&sw_watchdog_generation, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&sw_watchdog_lock);
}

/* fork() with another thread inside one of these locks would leave it held
   forever in the child: hold them across the fork. */
static void sw_atfork_prepare(void)
{
    pthread_mutex_lock(&sw_watchdog_lock);
    sw_closed_list_lock();
}

static void sw_atfork_parent(void)
{
    sw_closed_list_unlock();
    pthread_mutex_unlock(&sw_watchdog_lock);
}

static void sw_atfork_child(void)
{
    sw_fork_generation++;
    if (sw_fork_generation == 0) /* 0 means "no watchdog" */
        sw_fork_generation = 1;
    sw_closed_list_unlock();
    pthread_mutex_unlock(&sw_watchdog_lock);
}
