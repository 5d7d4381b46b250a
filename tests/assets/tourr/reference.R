# Computes tourr's reference values for tests/test_pursuit.py and benchmarks/bench_pursuit.py.
# Run through make_reference.py, which writes the input JSON and reads this script's output.
#   Rscript reference.R TOURR_DIR INPUT.json OUTPUT.json
# TOURR_DIR: a checkout of ggobi/tourr 1.2.9 (its R/ files are sourced; nothing of tourr is copied
# into this repository). Needs R >= 4.1 with MASS, tibble, dplyr and jsonlite.
suppressMessages({library(MASS); library(tibble); library(dplyr); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
for (f in list.files(file.path(args[1], "R"), full.names = TRUE)) sys.source(f, envir = globalenv())
job <- fromJSON(args[2], simplifyVector = TRUE, simplifyDataFrame = FALSE, simplifyMatrix = TRUE)
as_mat <- function(x) { m <- as.matrix(x); if (is.null(dim(x))) m <- matrix(x, ncol = 1); m }
out <- list(R = R.version.string, tourr = job$tourr_version)

# 1. index values on small synthetic views Y (n x d), labels as categories
out$indices <- lapply(job$indices, function(case) {
  Y <- as_mat(case$Y); cl <- case$labels
  r <- list(name = case$name, holes = holes()(Y), cmass = cmass()(Y))
  if (ncol(Y) > 1) {
    r$lda <- lda_pp(factor(cl))(Y)
  } else {
    ss <- summary(stats::aov(Y ~ factor(cl)))[[1]][["Sum Sq"]]
    r$lda <- 1 - ss[2] / sum(ss)            # 1 - SSW/SST from R's ANOVA table
    r$lda_tourr_F <- lda_pp(factor(cl))(Y)  # what tourr returns at d = 1 (the F statistic)
  }
  r$pda <- sapply(job$lambdas, function(l) as.numeric(pda_pp(cl, lambda = l)(Y)))
  r
})

# 2. study data: values at given frames, and tourr's guided tour from seeded random starts
X <- matrix(readBin(job$study$path, "numeric", size = 4, n = job$study$n * job$study$p,
                    endian = "little"), ncol = job$study$p, byrow = TRUE)
con <- file(job$study$labels, "rb")
cl <- readBin(con, "integer", size = 2, signed = FALSE, n = job$study$n, endian = "little")
close(con)
Xs <- scale(X)  # standardised columns (n - 1), for holes at fixed frames
frames <- lapply(job$study$frames, as_mat)
out$frames <- lapply(frames, function(F) list(
  lda = lda_pp(factor(cl))(X %*% F), pda = pda_pp(cl, 0.2)(X %*% F),
  holes_scaled = holes()(Xs %*% F), cmass_scaled = cmass()(Xs %*% F)))

run_guided <- function(data, index_f, seed, d) {
  evals <- 0
  counted <- function(mat) { evals <<- evals + 1; index_f(mat) }
  set.seed(seed)
  t0 <- proc.time()[["elapsed"]]
  h <- suppressMessages(suppressWarnings(
    save_history(data, guided_tour(counted, d = d, search_f = search_geodesic), max_bases = 200)))
  secs <- proc.time()[["elapsed"]] - t0
  last <- matrix(h[, , dim(h)[3]], ncol = d)
  first <- matrix(h[, , 1], ncol = d)
  cat(sprintf("guided seed %d: %d bases, %d evaluations, %.0f s\n", seed, dim(h)[3], evals, secs), file = stderr())
  list(seed = seed, value = index_f(data %*% last), start_value = index_f(data %*% first),
       bases = dim(h)[3], evaluations = evals, seconds = secs, frame = last)
}
# tourr's LDA costs ~0.25 s per view at 50,000 rows and its PDA index loops over rows in R, and a
# guided tour takes thousands of views: LDA and PDA run on every k-th row (k = lda_stride,
# pda_stride), holes on all rows of the sphered data.
Z <- sphere_data(X)
lsub <- seq(1, nrow(X), by = job$study$lda_stride)
psub <- seq(1, nrow(X), by = job$study$pda_stride)
out$guided <- list(
  holes_sphered = lapply(job$seeds, function(s) run_guided(Z, holes(), s, 2)),
  lda_subsample = lapply(job$seeds, function(s) run_guided(X[lsub, ], lda_pp(factor(cl[lsub])), s, 2)),
  pda_subsample = lapply(job$seeds, function(s) run_guided(X[psub, ], pda_pp(cl[psub], 0.2), s, 2)))
write_json(out, args[3], digits = I(17), auto_unbox = TRUE, pretty = FALSE)
