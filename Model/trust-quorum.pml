/*
 * Keyrack trust quorum: a Promela model of reconfiguration, commit,
 * prepare-and-commit, share recomputation, coordinator and node crashes and
 * expungement, with the safety invariants of shared/spec/trust-quorum.md as
 * assertions checked after every step. Model/README.md maps each part to the
 * Swift code.
 *
 *   spin -a trust-quorum.pml && cc -O2 -DSAFETY -o pan pan.c && ./pan -m100000
 *
 * Weakened variants (each must be rejected by spin):
 *   -DWEAK_COMMIT_QUORUM  the control plane commits after K - 1 acks
 *   -DWEAK_REUSE_EPOCH    an aborted epoch is retried with another coordinator
 *   -DWEAK_TRUST_UNSIGNED_COMMIT  (with -DROGUE) a node commits a configuration
 *                         from a peer whose commit signature does not verify
 *
 * -DROGUE adds a rogue: node 2 (a member of epoch 1, removed when the operator
 * replaces it by node 3) that keeps its key and keeps sending: at any step it
 * may hand any other node a forged CommitAdvance (a configuration nobody
 * signed, or one equal to a signed one) or Expunged, of epoch 2 or 3, at most
 * MAXFORGE times. Signatures are abstract: signedCfg[e] is the configuration
 * the operator committed at epoch e; a commit verifies exactly when it is that
 * configuration, an Expunged when that configuration leaves the node out.
 *
 * Scale: 4 nodes (0, 1, 2 start as the members of epoch 1, K = 2; 3 is a
 * spare), epochs 1..MAXE (MAXE = 3: two reconfigurations, aborted attempts
 * included). Shares and secrets are abstract: a node either holds its share
 * of an epoch or not, and a share is valid for a configuration exactly when
 * the sender's configuration of that epoch is the receiver's.
 *
 * Messages are not queued. A message is deliverable whenever its cause holds:
 * a Prepare once its coordinator built the configuration (messages outlive
 * their sender), a PrepareAck once the member sent it, a reply to GetShare
 * while the asked peer is up. Every deliverable message may be delivered any
 * number of times, in any order, or never: loss, duplication and reordering
 * are all covered.
 */

#define NN 4
#ifndef MAXE
#define MAXE 3
#endif
#ifndef MAXFORGE
#define MAXFORGE 2
#endif
#define ROGUE_NODE 2
#define FORGED_ALL 47   /* members 0 1 2 3, coordinator 2 */
#define FORGED_SMALL 43 /* members 0 1 3, "coordinator" 2: no operator ever signs it */
#ifndef MAXCRASH
#define MAXCRASH 1
#endif
#define E 4 /* epochs 0..3 in arrays; 0 means none */

/* A configuration is a byte: bits 0-3 the members, bits 4-5 the coordinator. */
#define MEMBERS(c) ((c) & 15)
#define COORD(c) (((c) >> 4) & 3)
#define IN(n, c) ((((c) >> (n)) & 1) == 1)
#define BIT(n) (1 << (n))
#define POP(m) ((((m) >> 0) & 1) + (((m) >> 1) & 1) + (((m) >> 2) & 1) + (((m) >> 3) & 1))
/* K = N/2 + 1, as the control plane picks by default. */
#define KOF(c) (POP(MEMBERS(c)) / 2 + 1)
#define IX(n, e) ((n) * E + (e))
/* Acks the control plane waits for: K + Z, Z = 0 for N <= 4. */
#ifdef WEAK_COMMIT_QUORUM
#define COMMIT_QUORUM(c) (KOF(c) - 1) /* BUG: one ack short */
#else
#define COMMIT_QUORUM(c) (KOF(c))
#endif

/* Persistent state of each node (the ledger: survives crashes). */
byte cfg[NN * E];   /* configuration of epoch e known to node n, 0 if none */
bit share[NN * E];  /* node n holds its share of epoch e */
byte committed[NN]; /* latest committed epoch, 0 if none */
byte expunged[NN];  /* the epoch it was expunged at, 0 if not */

/* Volatile state (lost on a crash). */
bit up[NN];
byte coordE[NN];     /* epoch being coordinated, 0 if not coordinating */
byte coordOld[NN];   /* the last committed epoch the coordination builds on */
byte coordCfg[NN];   /* the members of the new configuration (its value once built) */
bit preparing[NN];   /* 0: collecting old shares; 1: Prepare sent, collecting acks */
byte coll[NN];       /* collected shares (collecting) or acks (preparing), a node mask */
byte compE[NN];      /* epoch whose share the node is computing, 0 if not */
byte compColl[NN];   /* shares collected for the computation */

/* Messages in flight, as their causes (see the header). */
byte prepMsg[NN * E]; /* the configuration coordinator c sent Prepare for at epoch e */
byte ackSent[NN * E]; /* members that sent PrepareAck to coordinator c for epoch e */

/* The control plane. */
byte cpE;          /* highest epoch started */
bit cpBusy;        /* a reconfiguration is under way */
byte cpCoord;      /* its coordinator */
byte cpTarget;     /* its members */
byte cpLast;       /* last committed epoch */
byte cpLastCfg;    /* last committed configuration */
byte cpConfirmed;  /* members that confirmed the commit */
byte removedEver;  /* nodes removed by a committed configuration (wiped, never re-added) */
byte downCount;
byte crashes;      /* crashes so far, at most MAXCRASH */

bit alarm;         /* a node raised an alarm (any alarm is a violation) */
byte signedCfg[E]; /* the configuration the operator signed the commit of, by epoch */
byte forged;       /* forged messages the rogue sent so far */

/* Scratch for d_step loops; always reset to 0, so it adds no states. */
byte i, j, t, u;

/* ------------------------------------------------------------------ */
/* The invariants (shared/spec/trust-quorum.md, "Invariants the        */
/* simulator checks after every event"), checked after every step.     */

inline hasPassed(n, e, result) {
    /* prepared e, or moved past it (committed or expunged later) */
    result = ((cfg[IX(n, e)] != 0 && share[IX(n, e)]) || committed[n] > e || expunged[n] > e)
}

inline checkInvariants() {
    d_step {
        /* no-alarms */
        assert(!alarm);
        i = 0;
        do
        :: i < NN ->
            /* configurations-agree */
            j = 0;
            do
            :: j < NN * E ->
                assert(cfg[IX(i, j % E)] == 0 || cfg[j] == 0 || cfg[IX(i, j % E)] == cfg[j]);
                j++
            :: else -> break
            od;
            /* acked-nodes-prepared */
            if
            :: coordE[i] != 0 && preparing[i] ->
                j = 0;
                do
                :: j < NN ->
                    if
                    :: (coll[i] >> j) & 1 ->
                        hasPassed(j, coordE[i], t);
                        assert(t)
                    :: else -> skip
                    fi;
                    j++
                :: else -> break
                od
            :: else -> skip
            fi;
            /* only-signed-commits: every commit is one the operator signed */
            assert(committed[i] == 0 || cfg[IX(i, committed[i])] == signedCfg[committed[i]]);
            /* expunged only by a signed configuration that leaves the node out */
            assert(expunged[i] == 0 || (signedCfg[expunged[i]] != 0 && !IN(i, signedCfg[expunged[i]])));
            /* committed-nodes-committed */
            assert(!((cpConfirmed >> i) & 1) || committed[i] >= cpLast);
            /* coordinate-xor-compute */
            assert(coordE[i] == 0 || compE[i] == 0);
            /* expunged-knows-or-listed (and no lost committed configuration) */
            assert(expunged[i] != 0 || committed[i] == 0
                || (cfg[IX(i, committed[i])] != 0 && IN(i, cfg[IX(i, committed[i])])));
            /* no-share-outside-membership */
            j = 1;
            do
            :: j < E ->
                assert(!share[IX(i, j)] || (cfg[IX(i, j)] != 0 && IN(i, cfg[IX(i, j)])));
                j++
            :: else -> break
            od;
            i++
        :: else -> break
        od;
        /* committed-epoch-recoverable: K members of the last committed
           configuration hold their shares of it, so every member can commit
           it, compute its share and load the secret (the safety half of the
           spec's liveness property). */
        t = 0;
        i = 0;
        do
        :: i < NN ->
            if
            :: IN(i, cpLastCfg) && share[IX(i, cpLast)] -> t++
            :: else -> skip
            fi;
            i++
        :: else -> break
        od;
        assert(t >= KOF(cpLastCfg));
        i = 0; j = 0; t = 0
    }
}

/* ------------------------------------------------------------------ */
/* Node transitions (Sources/TrustQuorum/Node.swift)                    */

inline latestKnown(n, result) {
    result = 0;
    if :: cfg[IX(n, 1)] != 0 -> result = 1 :: else -> skip fi;
    if :: cfg[IX(n, 2)] != 0 -> result = 2 :: else -> skip fi;
    if :: cfg[IX(n, 3)] != 0 -> result = 3 :: else -> skip fi
}

/* Node.commit(configuration:): record, prune older epochs, drop stale work,
   start computing the share if we hold none. */
inline commitConfig(me, e, c) {
    cfg[IX(me, e)] = c;
    committed[me] = e;
    t = 1;
    do
    :: t < e -> cfg[IX(me, t)] = 0; share[IX(me, t)] = 0; t++
    :: else -> break
    od;
    t = 0;
    coordE[me] = 0; coordOld[me] = 0; coordCfg[me] = 0; preparing[me] = 0; coll[me] = 0;
    if
    :: compE[me] != 0 && compE[me] < e -> compE[me] = 0; compColl[me] = 0
    :: else -> skip
    fi;
    if
    :: !share[IX(me, e)] -> compE[me] = e; compColl[me] = 0
    :: else -> skip
    fi
}

/* Node.receivedExpunged: acted on only with the signed configuration of e
   that leaves this node out. */
inline becomeExpunged(me, e) {
    if
    :: committed[me] < e && signedCfg[e] != 0 && !IN(me, signedCfg[e]) ->
        expunged[me] = e;
        t = 1;
        do :: t < E -> share[IX(me, t)] = 0; t++ :: else -> break od;
        t = 0;
        coordE[me] = 0; coordOld[me] = 0; coordCfg[me] = 0; preparing[me] = 0; coll[me] = 0;
        compE[me] = 0; compColl[me] = 0
    :: else -> skip
    fi
}

/* Node.receivedCommitAdvance: only a configuration whose commit signature
   verifies is looked at. */
inline commitAdvance(me, e, c) {
    if
#ifdef WEAK_TRUST_UNSIGNED_COMMIT
    :: true -> /* BUG: the commit signature is not checked */
#else
    :: signedCfg[e] == c ->
#endif
        if
        :: cfg[IX(me, e)] != 0 && cfg[IX(me, e)] != c -> alarm = 1 /* MismatchedConfigurations */
        :: else ->
            if
            :: committed[me] < e && IN(me, c) -> commitConfig(me, e, c)
            :: else -> skip
            fi
        fi
    :: else -> skip /* refused and counted: the signature does not verify */
    fi
}

/* Node.prepare: the coordinator builds the configuration, persists its own
   share and sends Prepare to the other members. */
inline buildConfiguration(me) {
    coordCfg[me] = MEMBERS(coordCfg[me]) | (me << 4);
    cfg[IX(me, coordE[me])] = coordCfg[me];
    share[IX(me, coordE[me])] = 1;
    prepMsg[IX(me, coordE[me])] = coordCfg[me];
    preparing[me] = 1;
    coll[me] = BIT(me)
}

/* Node.receivedShare from p for epoch e, checked against our configuration. */
inline receivedShare(me, p, e) {
    if
    :: cfg[IX(me, e)] != 0 && cfg[IX(me, e)] == cfg[IX(p, e)] && IN(p, cfg[IX(me, e)]) ->
        if
        :: coordE[me] != 0 && !preparing[me] && coordOld[me] == e ->
            coll[me] = coll[me] | BIT(p);
            if
            :: POP(coll[me]) >= KOF(cfg[IX(me, e)]) -> buildConfiguration(me)
            :: else -> skip
            fi
        :: else -> skip
        fi;
        if
        :: compE[me] == e ->
            compColl[me] = compColl[me] | BIT(p);
            if
            :: POP(compColl[me]) >= KOF(cfg[IX(me, e)]) ->
                /* Shamir.recompute at our x: K valid shares of one polynomial */
                share[IX(me, e)] = 1; compE[me] = 0; compColl[me] = 0
            :: else -> skip
            fi
        :: else -> skip
        fi
    :: else -> skip /* rejected: does not match the digest */
    fi
}

/* me asks p for its share of epoch q (GetShare); p answers as
   Node.receivedGetShare does, and me handles the answer. */
inline ask(me, p, q) {
    if
    :: committed[p] > q ->
        if
        :: IN(me, cfg[IX(p, committed[p])]) -> commitAdvance(me, committed[p], cfg[IX(p, committed[p])])
        :: else -> becomeExpunged(me, committed[p])
        fi
    :: else ->
        if
        :: cfg[IX(p, q)] != 0 && share[IX(p, q)] ->
            if
            :: IN(me, cfg[IX(p, q)]) -> receivedShare(me, p, q)
            :: else ->
                if
                :: q == committed[p] -> becomeExpunged(me, q)
                :: else -> skip
                fi
            fi
        :: else -> skip /* behind, or still computing its own share */
        fi
    fi
}

#define LIVE(n) (up[n] && expunged[n] == 0)
#define PEER(p) (p != me && LIVE(p))

/* Node.receivedPrepare of coordinator c's configuration of epoch e. */
#define PREPARE(c, e) \
    :: atomic { LIVE(me) && c != me && prepMsg[IX(c, e)] != 0 && IN(me, prepMsg[IX(c, e)]) -> \
        if \
        :: cfg[IX(me, e)] != 0 -> \
            if \
            :: cfg[IX(me, e)] != prepMsg[IX(c, e)] -> alarm = 1 /* MismatchedConfigurations */ \
            :: else -> \
                if \
                :: !share[IX(me, e)] -> share[IX(me, e)] = 1; \
                    if :: compE[me] == e -> compE[me] = 0; compColl[me] = 0 :: else -> skip fi \
                :: else -> skip \
                fi; \
                ackSent[IX(c, e)] = ackSent[IX(c, e)] | BIT(me) \
            fi \
        :: else -> \
            latestKnown(me, t); \
            if \
            :: committed[me] >= e || t > e || (coordE[me] != 0 && coordE[me] >= e) -> skip \
            :: else -> \
                coordE[me] = 0; coordOld[me] = 0; coordCfg[me] = 0; preparing[me] = 0; coll[me] = 0; \
                cfg[IX(me, e)] = prepMsg[IX(c, e)]; share[IX(me, e)] = 1; \
                ackSent[IX(c, e)] = ackSent[IX(c, e)] | BIT(me) \
            fi; \
            t = 0 \
        fi; \
        checkInvariants() }

/* Node.receivedPrepareAck from m. */
#define ACK(m) \
    :: atomic { LIVE(me) && coordE[me] != 0 && preparing[me] && ((ackSent[IX(me, coordE[me])] >> m) & 1) \
            && !((coll[me] >> m) & 1) && IN(m, coordCfg[me]) -> \
        coll[me] = coll[me] | BIT(m); \
        checkInvariants() }

/* GetShare to p: for the coordinator's old epoch, for the share being
   computed, and for loading the secret of the latest committed epoch
   (which is how a node that fell behind learns of newer configurations
   or of its expungement). */
#define ASK(p) \
    :: atomic { LIVE(me) && PEER(p) && coordE[me] != 0 && !preparing[me] -> \
        ask(me, p, coordOld[me]); checkInvariants() } \
    :: atomic { LIVE(me) && PEER(p) && compE[me] != 0 -> ask(me, p, compE[me]); checkInvariants() } \
    :: atomic { LIVE(me) && PEER(p) && committed[me] != 0 && share[IX(me, committed[me])] -> \
        ask(me, p, committed[me]); checkInvariants() }

proctype Node(byte me) {
    do
    PREPARE(0, 2) PREPARE(1, 2) PREPARE(2, 2) PREPARE(3, 2)
    PREPARE(0, 3) PREPARE(1, 3) PREPARE(2, 3) PREPARE(3, 3)
    ACK(0) ACK(1) ACK(2) ACK(3)
    ASK(0) ASK(1) ASK(2) ASK(3)
    /* commit(epoch) or prepareAndCommit(config) from the control plane */
    :: atomic { LIVE(me) && cpLast > 0 && IN(me, cpLastCfg) && !((cpConfirmed >> me) & 1) ->
        if
        :: committed[me] >= cpLast -> skip /* already committed: confirm */
        :: cfg[IX(me, cpLast)] != 0 && cfg[IX(me, cpLast)] != cpLastCfg -> alarm = 1 /* MismatchedConfigurations */
        :: else -> commitConfig(me, cpLast, cpLastCfg)
        fi;
        cpConfirmed = cpConfirmed | BIT(me);
        checkInvariants() }
#ifdef ROGUE
    /* the rogue (node 2, removed or not) hands this node a forged message */
    :: atomic { LIVE(me) && me != ROGUE_NODE && forged < MAXFORGE ->
        forged++;
        if :: u = 2 :: u = 3 fi;
        if
        :: true -> commitAdvance(me, u, FORGED_ALL)
        :: true -> commitAdvance(me, u, FORGED_SMALL)
        :: true -> becomeExpunged(me, u)
        fi;
        u = 0;
        checkInvariants() }
#endif
    /* crash: volatile state lost (at most one node down at a time) */
    :: atomic { up[me] && downCount == 0 && crashes < MAXCRASH ->
        up[me] = 0; downCount++; crashes++;
        coordE[me] = 0; coordOld[me] = 0; coordCfg[me] = 0; preparing[me] = 0; coll[me] = 0;
        compE[me] = 0; compColl[me] = 0;
        checkInvariants() }
    /* restart from the ledger: resume computing a missing share */
    :: atomic { !up[me] ->
        up[me] = 1; downCount--;
        if
        :: expunged[me] == 0 && committed[me] != 0 && !share[IX(me, committed[me])] -> compE[me] = committed[me]
        :: else -> skip
        fi;
        checkInvariants() }
    od
}

/* ------------------------------------------------------------------ */
/* The control plane (Sources/TrustQuorum/ControlPlane.swift)           */

/* Hand the request to the coordinator (Node.reconfigure), which refuses an
   epoch it has seen, or a request it cannot coordinate. */
inline sendReconfigure(c) {
    latestKnown(c, t);
    if
    :: LIVE(c) && cpE > t && cpE > coordE[c] && committed[c] == cpLast && share[IX(c, cpLast)] ->
        coordE[c] = cpE; coordOld[c] = cpLast; coordCfg[c] = cpTarget;
        preparing[c] = 0; coll[c] = BIT(c); compE[c] = 0; compColl[c] = 0
    :: else -> skip /* refused or down: the control plane times out and retries */
    fi;
    t = 0
}

/* ControlPlane.attempt: a coordinator among the members of the target that
   are up and confirmed the last commit, eligible[epoch % count] in id order. */
inline attempt() {
    u = 0; i = 0;
    do
    :: i < NN ->
        if :: IN(i, cpTarget) && LIVE(i) && ((cpConfirmed >> i) & 1) -> u = u | BIT(i) :: else -> skip fi;
        i++
    :: else -> break
    od;
    if
    :: u != 0 ->
        j = cpE % POP(u); i = 0;
        do
        :: (u >> i) & 1 && j == 0 -> break
        :: (u >> i) & 1 && j > 0 -> j--; i++
        :: !((u >> i) & 1) -> i++
        od;
        cpCoord = i;
        sendReconfigure(cpCoord)
    :: else -> skip /* nobody can coordinate: retried at the next abort */
    fi;
    i = 0; j = 0; u = 0
}

proctype ControlPlane() {
    byte target;
end:
    do
    /* the operator asks for a reconfiguration: rotate, add or remove a node
       (3 or 4 members, never re-adding a removed node) */
    :: atomic { !cpBusy && cpE < MAXE ->
        if
        :: target = 15 /* 0 1 2 3: add 3 */
        :: target = 11 /* 0 1 3: 3 replaces 2, which is expunged */
        :: cpLast > 1 -> target = MEMBERS(cpLastCfg) /* rotate */
        fi;
        if
        :: (target & removedEver) == 0 -> cpTarget = target; cpBusy = 1; cpE++
        :: else -> skip
        fi;
        target = 0 }
        if
        :: cpBusy ->
            atomic {
                attempt();
                checkInvariants() }
        :: else -> skip
        fi
    /* poll the coordinator: commit once it holds K + Z acks (Z = 0 for N <= 4) */
    :: atomic { cpBusy && up[cpCoord] && coordE[cpCoord] == cpE && preparing[cpCoord] &&
            POP(coll[cpCoord] & cpTarget) >= COMMIT_QUORUM(coordCfg[cpCoord]) ->
        removedEver = removedEver | (MEMBERS(cpLastCfg) & ~MEMBERS(coordCfg[cpCoord]));
        cpLast = cpE; cpLastCfg = coordCfg[cpCoord]; cpConfirmed = 0; cpBusy = 0;
        signedCfg[cpE] = coordCfg[cpCoord]; /* the operator signs the commit */
        checkInvariants() }
    /* the attempt stalls or its coordinator is down: abort and retry */
    :: atomic { cpBusy && cpE < MAXE ->
#ifdef WEAK_REUSE_EPOCH
        skip; /* BUG: the aborted epoch is reused */
#else
        cpE++;
#endif
        attempt();
        checkInvariants() }
    :: atomic { cpBusy && cpE == MAXE -> cpBusy = 0 } /* give up: out of epochs */
    od
}

init {
    atomic {
        /* Epoch 1, committed: members 0 1 2, coordinator 0, K = 2. */
        i = 0;
        do
        :: i < 3 ->
            cfg[IX(i, 1)] = 7; share[IX(i, 1)] = 1; committed[i] = 1; up[i] = 1; i++
        :: else -> break
        od;
        i = 0;
        up[3] = 1;
        cpE = 1; cpLast = 1; cpLastCfg = 7; cpConfirmed = 7; signedCfg[1] = 7;
        run Node(0); run Node(1); run Node(2); run Node(3);
        run ControlPlane()
    }
}
